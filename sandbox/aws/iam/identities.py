"""The sandbox's identities and credentials, in its build account.

`sandbox.up` writes `credentials.json` (mode 0600) in the state directory with two access keys
made from the system's random source: `admin` (user `kiln-admin`, AdministratorAccess: runs
`invoke bootstrap` and tests' setup) and `operator` (user `kiln-operator`, the day-to-day policy
of `cloud/policies/operator.json`: every other task), plus the token `/moto-api/reset` needs. The
server creates both users with exactly those keys when it starts and after every reset.

Every other account of the sandbox stands for a member account the build account's organization
created, so it has `OrganizationAccountAccessRole` (trusting the build account, full access), as
AWS Organizations makes it; `invoke bootstrap` assumes it there.
"""

from __future__ import annotations

import json
import os
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

BUILD_ACCOUNT = "123456789012"
CREDENTIALS = "credentials.json"
RESET_HEADER = "X-Sandbox-Reset-Token"
ORGANIZATION_ROLE = "OrganizationAccountAccessRole"
OPERATOR_POLICY = Path(__file__).resolve().parents[3] / "cloud" / "policies" / "operator.json"
ADMIN_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "*", "Resource": "*"}]})
USERS = {"admin": "kiln-admin", "operator": "kiln-operator"}
_CACHE: dict = {}


# -- the control side: writing the credentials -------------------------------------------------


def _key_id() -> str:
    return "AKIA" + "".join(secrets.choice(string.ascii_uppercase + "234567") for _ in range(16))


def write_credentials(state_dir: Path, prefix: str = "kiln", mode: str = "enforce") -> dict:
    """Create the credentials file unless it exists (a running sandbox keeps its keys)."""
    path = Path(state_dir) / CREDENTIALS
    if path.exists():
        return read_credentials(state_dir)
    data = {name: {"AccessKeyId": _key_id(), "SecretAccessKey": secrets.token_urlsafe(30)}
            for name in USERS}
    data.update(reset_token=secrets.token_urlsafe(24), prefix=prefix, mode=mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(data, handle)
    return data


def read_credentials(state_dir: Path) -> dict:
    return json.loads((Path(state_dir) / CREDENTIALS).read_text())


def reset_token(state_dir: Path) -> str:
    return read_credentials(state_dir)["reset_token"]


def mode(state_dir: Path | None) -> str:
    """`enforce` (denials refused) or `audit` (denials only logged to iam.log)."""
    if state_dir is None:
        return "enforce"
    return _CACHE.get("mode") or read_credentials(state_dir).get("mode", "enforce")


# -- the server side: the users, their keys, the organization's roles ---------------------------


def operator_policy(prefix: str, account: str = BUILD_ACCOUNT, partition: str = "aws") -> str:
    # The sandbox's accounts use the default deployer role name (invoke.yaml).
    # ... and pipelines' S3 sources in their artifact buckets (orchestrator/codepipeline.py).
    text = OPERATOR_POLICY.read_text().replace(
        "${DeployerRoleArns}", "arn:${AWS::Partition}:iam::*:role/${Prefix}-deployer").replace(
        "${PipelineSourceObjects}",
        "arn:${AWS::Partition}:s3:::${Prefix}-pipeline-*-artifactbucket-*/source/*")
    for name, value in (("${Prefix}", prefix), ("${AWS::AccountId}", account),
                        ("${AWS::Partition}", partition), ("${AWS::URLSuffix}", "amazonaws.com")):
        text = text.replace(name, value)
    return text


def seed(state_dir: Path) -> None:
    """Create the admin and operator users with the keys of credentials.json."""
    from moto.iam.models import iam_backends

    data = read_credentials(state_dir)
    _CACHE["mode"] = data.get("mode", "enforce")
    backend = iam_backends[BUILD_ACCOUNT]["aws"]
    policies = {"admin": ADMIN_POLICY, "operator": operator_policy(data["prefix"])}
    for name, user_name in USERS.items():
        if user_name in {u.name for u in backend.list_users("/", None, None)}:
            # Restored from a snapshot (sandbox.aws.persistence): this start's keys replace
            # the last start's, which credentials.json no longer holds.
            for key in list(backend.list_access_keys(user_name)):
                backend.delete_access_key(key.access_key_id, user_name)
        else:
            backend.create_user(region_name="us-east-1", user_name=user_name, path="/",
                                tags=[{"Key": "kiln:sandbox", "Value": name}])
        backend.put_user_policy(user_name, name, policies[name])
        _set_key(backend, user_name, data[name])


def _set_key(backend, user_name: str, wanted: dict) -> None:
    key = backend.create_access_key(user_name)
    backend.access_keys.pop(key.physical_resource_id, None)
    key.access_key_id = wanted["AccessKeyId"]
    key.secret_access_key = wanted["SecretAccessKey"]
    backend.access_keys[key.physical_resource_id] = key


@dataclass(frozen=True)
class Key:
    """The identity behind an access key: an IAM user's, or an assumed role's session."""

    access_key: str
    secret: str
    arn: str
    partition: str = "aws"
    user: str | None = None
    role: str | None = None
    issued: datetime | None = None  # when an assumed role's session began


def find_key(account: str, access_key: str, token: str | None) -> Key | None:
    """The active key with this id in the account; a session's needs its own token, and a
    user's key is refused with any token (as AWS answers both: InvalidClientTokenId)."""
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends

    found = iam_backends[account]["aws"].access_keys.get(access_key)
    if found is None or getattr(found, "status", "Active") != "Active":
        return None
    if getattr(found, "role_arn", None):
        for session in sts_backends[account]["aws"].assumed_roles:
            if session.access_key_id == access_key and token and session.session_token == token:
                role = session.role_arn.rpartition("/")[2]
                arn = f"arn:aws:sts::{account}:assumed-role/{role}/{session.session_name}"
                return Key(access_key, session.secret_access_key, arn, role=role,
                           issued=getattr(found, "create_date", None))
        return None
    if token or not found.user_name:
        return None
    return Key(access_key, found.secret_access_key,
               f"arn:aws:iam::{account}:user/{found.user_name}", user=found.user_name)


def newer_than_session(role, key: Key) -> bool:
    """A role made after the session began is another role of the same name (AWS tells them
    apart by id): the session was for the one deleted."""
    made = getattr(role, "create_date", None)
    if made is None or key.issued is None:
        return False
    return _utc(made) > _utc(key.issued)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def role_by_arn(arn: str):
    """The role an ARN names, in whichever account; None when it does not exist."""
    from moto.iam.exceptions import NotFoundException
    from moto.iam.models import iam_backends

    parts = arn.split(":")
    if len(parts) < 6 or not parts[5].startswith("role/"):
        return None
    account, name = parts[4], parts[5].rpartition("/")[2]
    backend = iam_backends[account]["aws"]
    try:
        return backend.get_role(name)
    except NotFoundException:
        if name == ORGANIZATION_ROLE and account != BUILD_ACCOUNT:
            return _organization_role(backend)
        return None


def user_exists(arn: str) -> bool:
    from moto.iam.models import iam_backends

    account, name = arn.split(":")[4], arn.rpartition("/")[2]
    return name in iam_backends[account]["aws"].users


def _organization_role(backend):
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{BUILD_ACCOUNT}:root"},
        "Action": "sts:AssumeRole"}]})
    role = backend.create_role(role_name=ORGANIZATION_ROLE, assume_role_policy_document=trust,
                               path="/", permissions_boundary=None, description="",
                               tags=[], max_session_duration="3600", linked_service=None)
    backend.put_role_policy(ORGANIZATION_ROLE, "AdministratorAccess", ADMIN_POLICY)
    return role


def kms_key(resource: str, account: str, region: str):
    """The KMS key a resource ARN (key or alias) names; None when there is none."""
    from moto.kms.models import kms_backends

    if not resource.startswith("arn:aws:kms:"):
        return None
    parts = resource.split(":")
    key_region, key_account = parts[3], parts[4]
    backend = kms_backends[key_account][key_region]
    try:
        return backend.describe_key(resource if "alias/" not in resource else parts[5])
    except Exception:  # noqa: BLE001 - moto raises several kinds for a missing key
        return None


def grant_allows(key, caller, action: str) -> bool:
    """A grant on the key for the caller (its session, role or account) and this operation."""
    operation = action.partition(":")[2]
    names = {caller.arn, caller.role_arn, f"arn:aws:iam::{caller.account}:root"}
    for grant in getattr(key, "grants", {}).values():
        if grant.grantee_principal in names and operation in grant.operations:
            return True
    return False
