"""Every request is authenticated and authorized, as AWS does.

- Authentication: a request must be signed (SigV4) with a key the sandbox knows (an IAM user's
  access key, or the temporary key of an assumed role with its session token); an unknown key or a
  bad signature is refused (InvalidClientTokenId / SignatureDoesNotMatch, AuthFailure for EC2).
  Unsigned requests are anonymous: only S3 object reads a bucket policy grants to `*` pass.
- Authorization (sandbox/aws/iam/policy.py evaluates): the caller's identity policies (user, its
  groups, or the assumed role's inline and attached policies) must allow the action on the resource
  and none may deny it; for AssumeRole the role must exist and its trust policy allow the caller
  (principal, sts:ExternalId); KMS calls need the key policy (or a grant) too, and a key policy
  statement for the account root defers to the caller's identity policies; S3 bucket policies allow
  and deny beside identity policies. Handing a role to EC2 (an instance profile in RunInstances, or
  in the launch template of CreateAutoScalingGroup / UpdateAutoScalingGroup) needs iam:PassRole on
  the role (sandbox/aws/iam/arns.py: passed_roles).
- A denial answers AccessDenied (UnauthorizedOperation for EC2) naming identity, action and
  resource, as AWS's message does, and is logged to `iam.log` in the state directory.
- moto's own unauthenticated control endpoints that would switch this off or read secrets
  (`/moto-api/reset-auth`, `data.json`, the dashboard, seeding, state transitions, the recorder)
  are refused; `/moto-api/reset` needs the sandbox's reset token (sandbox/aws/iam/identities.py).
- The `x-moto-account-id` header, which lets moto callers pick their account, is ignored: the
  account is the one the access key belongs to.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, unquote

from sandbox.aws import seams
from sandbox.aws.iam import actions, identities, resources, sigv4
from sandbox.aws.iam import policy as iam
from sandbox.aws.iam.arns import keys_used, passed_roles, resource_for, secret_key_used

STATE: dict = {"dir": None, "lock": threading.Lock()}
# Where sandbox.server keeps the request as it arrived, in the WSGI environ.
RAW_TARGET = "sandbox.raw_target"
RAW_BODY = "sandbox.raw_body"


def apply(state_dir: Path) -> None:
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.core.responses import BaseResponse
    from moto.s3.models import FakeBucket

    STATE["dir"] = state_dir
    seams.replace(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0, signature=None, owner=__name__)
    seams.replace(ActionAuthenticatorMixin, "_authenticate_and_authorize_action", _authenticate,
                  signature="(self, iam_request_cls: type, resource: str = '*') -> None",
                  owner=__name__)
    seams.replace(BaseResponse, "get_current_account", _current_account,
                  signature="(self) -> 'str'", owner=__name__)
    # Bucket policies are evaluated here (_bucket_allows, _anonymous_s3), every S3 request
    # passing through; moto's own check would decide again by other rules (an empty 403 on a
    # Deny, ACLs for unsigned reads), so moto is told each request it asks about is permitted.
    seams.replace(FakeBucket, "get_permission", _decided_here,
                  signature="(self, action: 'str', resource: 'str') -> 'Any'", owner=__name__)
    _guard_moto_api(state_dir)
    identities.seed(state_dir)


def _decided_here(self, action: str, resource: str):
    from moto.iam.access_control import PermissionResult

    return PermissionResult.PERMITTED


def _current_account(self) -> str:
    from moto.iam.models import get_account_id_from

    return get_account_id_from(self.get_access_key())


# -- authentication -----------------------------------------------------------------------------


@dataclass
class Call:
    """One signed request, authenticated: who made it and what it asks, in AWS's terms."""

    response: object
    service: str  # the credential scope's service name (s3, ec2, monitoring…)
    region: str
    account: str
    key: identities.Key
    wire: sigv4.WireRequest
    operation: str | None
    actions: tuple[str, ...]
    s3: actions.S3Target | None = None


def _authenticate(self, iam_request_cls, resource: str = "*") -> None:
    wire = _wire(self)
    s3 = _is_s3(self)
    header = wire.header("Authorization")
    if not header:
        if s3:
            return _anonymous_s3(self, wire)
        raise _missing_signature(self)
    try:
        auth = sigv4.parse_authorization(header)
    except sigv4.Malformed as error:
        raise _auth_error(self, "IncompleteSignature", str(error), 400) from None
    key = identities.find_key(self.current_account, auth.access_key,
                              wire.header("X-Amz-Security-Token"))
    if key is None:
        raise _auth_error(self, "InvalidClientTokenId",
                          "The security token included in the request is invalid.", 403)
    if not sigv4.matches(wire, auth, key.secret):
        raise _auth_error(self, "SignatureDoesNotMatch",
                          "The request signature we calculated does not match the signature "
                          "you provided. Check your AWS Secret Access Key and signing method.",
                          403)
    late = sigv4.skew(wire, auth)
    if late:
        code = "RequestTimeTooSkewed" if s3 else "SignatureDoesNotMatch"
        raise _auth_error(self, code, late, 403)
    call = _call(self, wire, auth, key, s3)
    _check_permitted(call, resource)


def _call(response, wire: sigv4.WireRequest, auth: sigv4.Authorization, key, s3: bool) -> Call:
    account = response.current_account
    if s3:
        target = actions.s3_operation(wire.method, wire.path, wire.query, response.headers)
        action = actions.s3_action(target)
        return Call(response, "s3", auth.region, account, key, wire, target.operation,
                    (action,) if action else (), target)
    name = actions.operation(auth.service, wire.path, wire.query, _form(response),
                             response.headers)
    return Call(response, auth.service, auth.region, account, key, wire, name,
                actions.iam_actions(auth.service, name))


def _wire(response) -> sigv4.WireRequest:
    """The request as it arrived (sandbox.server keeps the raw request line and body)."""
    from flask import has_request_context, request

    environ = request.environ if has_request_context() else {}
    target = environ.get(RAW_TARGET) or environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not target:
        query = environ.get("QUERY_STRING", "")
        target = response.raw_path + (f"?{query}" if query else "")
    body = environ.get(RAW_BODY)
    if body is None:
        body = response.raw_body if isinstance(response.raw_body, bytes) else b""
    return sigv4.WireRequest.build(response.method, target, _header_items(response), body)


def _header_items(response) -> list[tuple[str, str]]:
    headers = response.headers
    return list(headers.items()) if hasattr(headers, "items") else []


def _form(response) -> dict:
    data = getattr(response, "data", None) or {}
    found = {}
    for key, value in (data.items() if hasattr(data, "items") else []):
        found[key] = value[0] if isinstance(value, list) and value else value
    return found


def _is_s3(response) -> bool:
    from moto.s3.responses import S3Response

    return isinstance(response, S3Response)


def _auth_error(response, code: str, message: str, status: int):
    """Authentication errors in each protocol's own shape (EC2: AuthFailure)."""
    from moto.core.exceptions import _RESTError

    if _is_s3(response):
        s3_code = {"InvalidClientTokenId": "InvalidAccessKeyId"}.get(code, code)
        return _s3_error(s3_code, message, status)
    if _service_of(response) == "ec2" and code != "IncompleteSignature":
        if message.startswith("Signature "):  # expired or not yet current
            code, message, status = "RequestExpired", "Request has expired.", 400
        else:
            code, message = "AuthFailure", "AWS was not able to validate the provided access " \
                                           "credentials"
            status = 401
    error = _RESTError(code, message)
    error.code = status
    return _as_json(response, error)


def _s3_error(code: str, message: str, status: int):
    """S3's bare <Error> document with AWS's status (moto's S3 errors have no status for these)."""
    from moto.core.exceptions import _RESTError

    error = _RESTError(code, message)
    error.description = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
                         f"{html.escape(code)}</Code><Message>{html.escape(message)}</Message>"
                         "</Error>")
    error.code = status
    return error


def _service_of(response) -> str:
    header = response.headers.get("Authorization", "")
    parts = header.partition("Credential=")[2].split("/")
    return parts[3] if len(parts) > 3 else ""


def _as_json(response, error):
    """JSON-protocol services (DynamoDB, KMS, Logs…) answer authentication errors in JSON."""
    from moto.core.exceptions import JsonRESTError

    if "json" not in response.headers.get("Content-Type", ""):
        return error
    code = getattr(error, "error_type", "")
    renamed = {"InvalidClientTokenId": "UnrecognizedClientException",
               "SignatureDoesNotMatch": "InvalidSignatureException"}.get(code)
    if renamed is None:
        return error
    replacement = JsonRESTError(renamed, error.message)
    replacement.code = 400 if renamed == "UnrecognizedClientException" else 403
    return replacement


def _missing_signature(response):
    from moto.core.exceptions import _RESTError

    error = _RESTError("MissingAuthenticationToken", "Request is missing Authentication Token")
    error.code = 403
    return error


def _anonymous_s3(response, wire: sigv4.WireRequest) -> None:
    """An unsigned S3 request: only what the bucket policy grants to everyone."""
    from moto.s3.exceptions import S3AccessDeniedError

    target = actions.s3_operation(wire.method, wire.path, wire.query, response.headers)
    action = actions.s3_action(target) or f"s3:{target.operation or 'unknown'}"
    resource = actions.s3_resource(target)
    bucket = _bucket(response, target.bucket)
    policies = [bucket.policy.decode() if isinstance(bucket.policy, bytes) else bucket.policy] \
        if bucket is not None and bucket.policy else []
    context = {"aws:SourceIp": _source_ip(), "aws:SecureTransport": _secure_transport()}
    result = iam.evaluate(policies, action, resource, context, principal={"anonymous": True})
    if result != iam.Result.ALLOW:
        _log(f"DENY anonymous {action} {resource}")
        raise S3AccessDeniedError()


def _bucket(response, name: str | None):
    from moto.s3.exceptions import S3ClientError
    from moto.s3.models import s3_backends

    if not name:
        return None
    try:
        return s3_backends[response.current_account]["aws"].get_bucket(name)
    except S3ClientError:
        return None


def _secure_transport() -> bool:
    """Whether the request came over TLS (sandbox/server.py answers both on one port)."""
    from flask import has_request_context, request

    return has_request_context() and request.environ.get("wsgi.url_scheme") == "https"


def _source_ip() -> str:
    from flask import has_request_context, request

    environ = request.environ if has_request_context() else {}
    return environ.get("REMOTE_ADDR", "127.0.0.1")


# -- authorization ------------------------------------------------------------------------------


class Caller:
    """Who signed the request: an IAM user or an assumed role's session."""

    def __init__(self, call: Call):
        key = call.key
        self.key = key
        self.account = call.account
        self.partition = key.partition
        self.arn = key.arn
        self.user = key.user
        self.role = key.role
        self.role_arn = _role_arn(self.account, self.role) if self.role else None

    @property
    def principal_arn(self) -> str:
        return self.role_arn or self.arn

    def principal(self) -> dict:
        arns = [self.arn] + ([self.role_arn] if self.role_arn else [])
        return {"arns": arns, "account": self.account}

    def policies(self) -> list:
        from moto.iam.models import iam_backends

        backend = iam_backends[self.account][self.partition]
        if self.role:
            role = identities.role_by_arn(self.role_arn)
            if role is None or identities.newer_than_session(role, self.key):
                # deleted since it was assumed, or deleted and made again under the same name
                # (a new role id, as on AWS): the old session's permissions are gone
                return []
            found = list(role.policies.values())
            found += [_document(p) for p in role.managed_policies.values()]
            return found
        user = backend.get_user(self.user)
        found = list(user.policies.values())
        found += [_document(p) for p in user.managed_policies.values()]
        for group in backend.get_groups_for_user(self.user):
            found += list(group.policies.values())
            found += [_document(p) for p in group.managed_policies.values()]
        return found


def _role_arn(account: str, name: str) -> str:
    """The role's ARN with its path (a service-linked role's is /aws-service-role/…/)."""
    from moto.iam.exceptions import NotFoundException
    from moto.iam.models import iam_backends

    try:
        return iam_backends[account]["aws"].get_role(name).arn
    except NotFoundException:
        return f"arn:aws:iam::{account}:role/{name}"


def _document(managed) -> str:
    version = next(v for v in managed.versions if v.is_default)
    return version.document


def _check_permitted(call: Call, resource: str) -> None:
    caller = Caller(call)
    if call.operation == "GetCallerIdentity" and call.service == "sts":
        return  # always allowed, as on AWS
    if not call.actions:
        _unknown_operation(call, caller)
        return
    params = _params(call)
    for action in call.actions:
        _check_action(call, caller, action, resource, params)
    if call.s3 is not None and call.s3.operation in ("CopyObject", "UploadPartCopy"):
        _check_copy_source(call, caller, params)
    for role_arn in passed_roles(call.actions[0], params, caller.account, call.region):
        here = {**_context(caller, "iam:PassRole", params), "iam:PassedToService":
                "ec2.amazonaws.com", iam.UNCOMPUTED: []}
        allowed, why = _decide(caller, "iam:PassRole", role_arn, here, params, call.region)
        if not allowed:
            _deny(call, caller, "iam:PassRole", role_arn, _with_uncomputed(why, here))
    _check_keys_used(call, caller, call.actions[0], params)
    _check_tag_on_create(call, caller, call.actions[0], params)
    launching = _context(caller, "ec2:RunInstances", params)
    for target in resources.launches(call.actions[0], params, caller.account, call.region):
        _check_target(call, caller, "ec2:RunInstances", target, launching, params)


def _check_action(call: Call, caller: Caller, action: str, resource: str, params: dict) -> None:
    service = action.partition(":")[0]
    placed = None
    if call.s3 is not None:
        resource = actions.s3_resource(call.s3, caller.partition)
        placed = _deleted_objects(call, action, resource) or None
    elif resource in ("*", None):
        placed = resources.targets(action, params, caller.account, call.region)
        if placed is None:
            resource = resource_for(service, action, params, caller.account, call.region)
    context = {**_context(caller, action, params), **_request_tags(service, params)}
    for target in placed or [resources.Target(resource, None)]:
        _check_target(call, caller, action, target, context, params)


def _check_target(call: Call, caller: Caller, action: str, target: resources.Target,
                  context: dict, params: dict) -> None:
    here = {**context, iam.COMPUTED: list(context.get(iam.COMPUTED, ())),
            iam.UNCOMPUTED: []}
    if target.tags is not None:  # the sandbox knows this resource's tags: absent ones are absent
        here.update({f"aws:ResourceTag/{k}": v for k, v in target.tags.items()})
        here[iam.COMPUTED].append("aws:resourcetag/")
    allowed, why = _decide(caller, action, target.arn, here, params, call.region)
    if not allowed:
        _deny(call, caller, action, target.arn, _with_uncomputed(why, here))


def _request_tags(service: str, params: dict) -> dict:
    """aws:RequestTag/* and aws:TagKeys, when the sandbox reads the request's tags."""
    tags = resources.request_tags(service, params)
    if tags is None:
        return {}
    return {**resources.tag_context(tags), iam.COMPUTED: ["aws:requesttag/", "aws:tagkeys"]}


def _with_uncomputed(why: str, context: dict) -> str:
    keys = sorted(set(context.get(iam.UNCOMPUTED) or ()))
    if not keys:
        return why
    return (f"{why} (the sandbox cannot compute condition key {', '.join(keys)} for this "
            "request and fails closed: docs/sandbox.md)")


def _check_tag_on_create(call: Call, caller: Caller, action: str, params: dict) -> None:
    """A create that tags what it makes needs the tagging action too (ec2:CreateTags with
    ec2:CreateAction, autoscaling:CreateOrUpdateTags, elasticloadbalancing:AddTags)."""
    for tag_action, arn, extra in resources.tag_on_create(action, params, caller.account,
                                                         call.region):
        context = {**_context(caller, tag_action, params), **extra,
                   iam.COMPUTED: ["aws:requesttag/", "aws:tagkeys"]}
        _check_target(call, caller, tag_action, resources.Target(arn, None), context, params)


def _check_copy_source(call: Call, caller: Caller, params: dict) -> None:
    """A copy reads its source: s3:GetObject (or GetObjectVersion) on it, as on AWS."""
    source = unquote(call.wire.header("x-amz-copy-source") or "").lstrip("/")
    path, _, query = source.partition("?")
    version = dict(parse_qsl(query)).get("versionId")
    action = "s3:GetObjectVersion" if version else "s3:GetObject"
    arn = f"arn:{caller.partition}:s3:::{path}"
    context = {**_context(caller, action, params), iam.UNCOMPUTED: []}
    allowed, why = _decide(caller, action, arn, context, params, call.region)
    if not allowed:
        _deny(call, caller, action, arn, _with_uncomputed(why, context))


def _unknown_operation(call: Call, caller: Caller) -> None:
    """No action in the sandbox's table (sandbox.aws.iam.actions): refused rather than guessed."""
    name = f"{actions.prefix(call.service)}:{call.operation or '(no operation)'}"
    _deny(call, caller, name, "*", "the sandbox's IAM table (sandbox/aws/iam/actions.py) has "
          "no action for this operation")


def _check_keys_used(call: Call, caller: Caller, action: str, params: dict) -> None:
    """EC2 uses customer managed keys as the caller (kms:ViaService ec2), and so does Secrets
    Manager for a secret's value (kms:ViaService secretsmanager, the secret's ARN in the
    encryption context): the key policy and the caller's policies must allow it. AWS managed
    keys (aws/ebs, aws/secretsmanager) allow every caller through their service."""
    region = call.region
    context = _context(caller, action, params)
    ec2 = {"kms:ViaService": f"ec2.{region}.amazonaws.com"}
    for key_arn, kms_actions in keys_used(action, params, caller.account, region):
        _check_key_use(call, caller, key_arn, kms_actions, {**context, **ec2}, params)
    used = secret_key_used(action, params, caller.account, region)
    if used is not None:
        key_arn, secret_arn, kms_actions = used
        via = {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com",
               "kms:EncryptionContext:SecretARN": secret_arn}
        _check_key_use(call, caller, key_arn, kms_actions, {**context, **via}, params)


def _check_key_use(call: Call, caller: Caller, key_arn: str, kms_actions: tuple,
                   context: dict, params: dict) -> None:
    region = call.region
    key = identities.kms_key(key_arn, caller.account, region)
    if key is None or getattr(key, "key_manager", "CUSTOMER") == "AWS":
        return  # no such key: the service answers that itself
    for kms_action in kms_actions:
        here = {**context, "kms:CallerAccount": caller.account,
                "kms:GrantIsForAWSResource": kms_action == "kms:CreateGrant",
                **key_context(key), iam.UNCOMPUTED: []}
        allowed, why = _decide(caller, kms_action, key.arn, here, params, region)
        if not allowed:
            _deny(call, caller, kms_action, key.arn, _with_uncomputed(why, here))


def _deleted_objects(call: Call, action: str, resource: str) -> list[resources.Target]:
    """DeleteObjects is authorized as s3:DeleteObject on each key it names, as on AWS."""
    if call.s3 is None or call.s3.operation != "DeleteObjects":
        return []
    body = call.wire.body.decode("utf-8", "replace")
    keys = re.findall(r"<Key>(.*?)</Key>", body)
    return [resources.Target(f"{resource}/{html.unescape(key)}", None) for key in keys]


def _params(call: Call) -> dict:
    """The request's parameters: query/form fields, or the JSON body. An S3 body is an object's
    bytes or an XML document, never parameters (decoding a 16 MB part as text took 0.2 s)."""
    found: dict = dict(_form(call.response))
    if call.service == "s3":
        return found
    body = call.wire.body.decode("utf-8", "replace")
    if body and body.lstrip().startswith("{"):
        with contextlib.suppress(ValueError):
            found.update(json.loads(body))
    elif body and "=" in body and "Action=" in body:
        for key, value in parse_qs(body).items():
            found.setdefault(key, unquote(value[0]))
    return found


def _context(caller: Caller, action: str, params: dict) -> dict:
    context = {
        "aws:PrincipalArn": caller.principal_arn,
        "aws:PrincipalAccount": caller.account,
        "aws:PrincipalType": "AssumedRole" if caller.role else "User",
        "aws:SecureTransport": _secure_transport(),
        "aws:ViaAWSService": False,
        "aws:SourceIp": _source_ip(),
    }
    if action == "sts:AssumeRole" and params.get("ExternalId"):
        context["sts:ExternalId"] = params["ExternalId"]
    if action == "sts:AssumeRole" and params.get("SourceIdentity"):
        context["sts:SourceIdentity"] = params["SourceIdentity"]
    if action.startswith("kms:"):
        context["kms:CallerAccount"] = caller.account
    if action == "kms:CreateGrant" and params.get("Operations"):
        context["kms:GrantOperations"] = params["Operations"]
    return context


def key_context(key) -> dict:
    """kms:ResourceAliases: the aliases of the key a KMS call (or EC2's use of it) acts on."""
    aliases = list(getattr(key, "aliases", None) or ())
    return {"kms:ResourceAliases": aliases} if aliases else {}


def _decide(caller: Caller, action: str, resource: str, context: dict, params: dict,
            region: str) -> tuple[bool, str]:
    if action.startswith("kms:"):
        context.update(key_context(identities.kms_key(resource, caller.account, region)))
    identity = iam.evaluate(caller.policies(), action, resource, context)
    if identity == iam.Result.DENY:
        return False, "an identity-based policy explicitly denies it"
    if action == "sts:AssumeRole":
        return _trusted(caller, resource, context, identity)
    if action.startswith("kms:"):
        return _key_allows(caller, action, resource, context, identity, region)
    if action.startswith("s3:"):
        return _bucket_allows(caller, action, resource, context, identity)
    if identity != iam.Result.ALLOW:
        return False, "no identity-based policy allows it"
    return True, ""


def _bucket_allows(caller: Caller, action: str, resource: str, context: dict,
                   identity) -> tuple[bool, str]:
    """S3 reads the bucket policy beside the caller's: its Deny wins; in the bucket owner's
    account either may allow; another account's caller needs both (AWS's cross-account rule)."""
    from moto.s3.exceptions import S3ClientError
    from moto.s3.models import s3_backends

    name = resource.partition(":::")[2].partition("/")[0]
    try:
        bucket = s3_backends[caller.account]["aws"].get_bucket(name) if name else None
    except S3ClientError:
        bucket = None
    if bucket is None:  # ListAllMyBuckets, CreateBucket, or no such bucket: S3 answers that
        ok = identity == iam.Result.ALLOW
        return ok, "" if ok else "no identity-based policy allows it"
    text = bucket.policy.decode() if isinstance(bucket.policy, bytes) else bucket.policy
    policy = [text] if text else []
    # A statement naming the caller itself, and one naming its account (root) too; a grant to
    # one's own account root defers to identity policies, as in KMS key policies.
    whole = caller.principal()
    direct = iam.evaluate(policy, action, resource, context,
                          principal={"arns": whole["arns"], "identity": whole})
    granted = iam.evaluate(policy, action, resource, context, principal=whole)
    if iam.Result.DENY in (direct, granted):
        return False, "the bucket policy explicitly denies it"
    if bucket.account_id == caller.account:
        if iam.Result.ALLOW in (identity, direct):
            return True, ""
        return False, "no identity-based policy allows it"
    if identity != iam.Result.ALLOW:
        return False, "no identity-based policy allows it"
    if granted != iam.Result.ALLOW:
        return False, (f"the bucket policy of account {bucket.account_id} does not grant it "
                       "(another account's bucket needs both)")
    return True, ""


def _trusted(caller: Caller, role_arn: str, context: dict, identity) -> tuple[bool, str]:
    role = identities.role_by_arn(role_arn)
    if role is None:
        return False, "the role does not exist"
    if identity != iam.Result.ALLOW:
        return False, "no identity-based policy allows it"
    trust = iam.evaluate([role.assume_role_policy_document], "sts:AssumeRole", role_arn,
                         context, principal=caller.principal())
    if trust != iam.Result.ALLOW:
        return False, "the role's trust policy does not allow it"
    if "sts:SourceIdentity" in context:
        # As on AWS: setting a source identity is sts:SetSourceIdentity, which the caller's
        # policies and the role's trust policy must both allow.
        if iam.evaluate(caller.policies(), "sts:SetSourceIdentity", role_arn,
                        context) != iam.Result.ALLOW:
            return False, "no identity-based policy allows sts:SetSourceIdentity"
        if iam.evaluate([role.assume_role_policy_document], "sts:SetSourceIdentity", role_arn,
                        context, principal=caller.principal()) != iam.Result.ALLOW:
            return False, "the role's trust policy does not allow sts:SetSourceIdentity"
    return True, ""


def _key_allows(caller: Caller, action: str, resource: str, context: dict, identity,
                region: str) -> tuple[bool, str]:
    key = identities.kms_key(resource, caller.account, region)
    if key is None:
        # CreateKey, ListKeys…, or a key that does not exist (KMS answers NotFound itself)
        ok = identity == iam.Result.ALLOW
        return ok, "" if ok else "no identity-based policy allows it"
    policy = [key.policy] if key.policy else []
    whole = caller.principal()
    direct = iam.evaluate(policy, action, resource, context,
                          principal={"arns": whole["arns"], "identity": whole})
    via_root = iam.evaluate(policy, action, resource, context,
                            principal={"account": caller.account, "identity": whole})
    if iam.Result.DENY in (direct, via_root):
        return False, "the key policy explicitly denies it"
    if identities.grant_allows(key, caller, action):
        return True, ""
    same_account = key.account_id == caller.account
    if direct == iam.Result.ALLOW and same_account:
        return True, ""
    if iam.Result.ALLOW in (direct, via_root) and identity == iam.Result.ALLOW:
        return True, ""
    if iam.Result.ALLOW not in (direct, via_root):
        return False, "the key policy does not allow it"
    return False, "no identity-based policy allows it"


def role_allows(role_arn: str, session: str, action: str, resource: str,
                region: str) -> tuple[bool, str]:
    """Whether a service acting with `role_arn` (CodePipeline or CodeBuild, say, with the
    session it assumed) may perform `action` on `resource`: the role's policies, and the bucket
    or key policy, decided as for a signed request of that session (over TLS, as the services
    call). A denial is logged to iam.log, as a refused request is; the service reports it."""
    account, name = role_arn.split(":")[4], role_arn.rpartition("/")[2]
    key = identities.Key("", "", f"arn:aws:sts::{account}:assumed-role/{name}/{session}",
                         role=name)
    caller = Caller(Call(None, "", region, account, key, None, None, ()))
    context = {**_context(caller, action, {}), "aws:SecureTransport": True}
    allowed, why = _decide(caller, action, resource, context, {}, region)
    if not allowed and identities.mode(STATE["dir"]) != "audit":
        _log(f"DENY {caller.arn} {action} {resource}: {why}")
        return False, (f"User: {caller.arn} is not authorized to perform: {action} on "
                       f"resource: {resource} because {why}")
    if not allowed:
        _log(f"DENY {caller.arn} {action} {resource}: {why}")
    return True, ""


def _deny(call: Call, caller: Caller, action: str, resource: str, why: str) -> None:
    from moto.core.exceptions import JsonRESTError, _RESTError

    message = (f"User: {caller.arn} is not authorized to perform: {action} on resource: "
               f"{resource} because {why}")
    _log(f"DENY {caller.arn} {action} {resource}: {why}")
    if identities.mode(STATE["dir"]) == "audit":
        return
    if "json" in (call.wire.header("Content-Type") or ""):
        error = JsonRESTError("AccessDeniedException", message)
        error.code = 400
    elif call.service == "s3":
        from moto.s3.exceptions import S3ClientError

        error = S3ClientError("AccessDenied", message)  # S3's bare <Error> document
    else:
        code = "UnauthorizedOperation" if call.service == "ec2" else "AccessDenied"
        error = _RESTError(code, message)
        error.code = 403
    raise error


def _log(line: str) -> None:
    if STATE["dir"] is None:
        return
    with STATE["lock"], open(Path(STATE["dir"]) / "iam.log", "a") as log:
        log.write(line + "\n")


# -- moto's control endpoints -------------------------------------------------------------------


def _guard_moto_api(state_dir: Path) -> None:
    from moto.moto_api._internal import responses
    from moto.moto_api._internal.recorder import responses as recorder

    refused = ("dashboard", "model_data", "reset_auth_response", "seed",
               "set_proxy_passthrough", "set_transition", "unset_transition")
    for name in refused:
        seams.replace(responses.MotoAPIResponse, name, _refuse,
                      signature=_HANDLER.format(request="req" if name == "seed" else "request",
                                                url="full_url",
                                                answer="str" if name == "dashboard" else _ANSWER),
                      owner=__name__)
    for name in ("reset_recording", "start_recording", "stop_recording", "upload_recording",
                 "download_recording", "replay_recording"):
        seams.replace(recorder.RecorderResponse, name, _refuse,
                      signature=_HANDLER.format(request="req", url="url", answer=_ANSWER),
                      owner=__name__)

    def token_required(reset):
        def reset_response(self, request, full_url, headers):
            if request.headers.get(identities.RESET_HEADER) != identities.reset_token(state_dir):
                return 403, {}, json.dumps({"Error": "the sandbox's reset token is required"})
            answer = reset(self, request, full_url, headers)
            identities.seed(state_dir)
            return answer

        return reset_response

    seams.wrap(responses.MotoAPIResponse, "reset_response", token_required,
               signature=_HANDLER.format(request="request", url="full_url", answer=_ANSWER),
               owner=__name__)


# moto's control endpoints' handlers, as inspect prints them.
_HANDLER = "(self, {request}: Any, {url}: str, headers: Any) -> {answer}"
_ANSWER = "tuple[int, dict[str, typing.Any], str | bytes]"


def _refuse(self, *args, **kwargs):
    return 403, {}, json.dumps({"Error": "refused by the sandbox"})
