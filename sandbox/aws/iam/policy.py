"""IAM policy evaluation as AWS documents it, for the sandbox's access control.

One statement matches a request when its Action (or NotAction), Resource (or NotResource),
Principal (resource policies only) and every Condition match. An explicit Deny wins over any
Allow; no Allow means an implicit deny. Condition operators: String*, Arn*, Bool, Null, IpAddress,
NotIpAddress, Numeric*, with `...IfExists` and the `ForAnyValue:` / `ForAllValues:` set forms.

A key absent from the request makes a condition false, except for the negated operators
(StringNot*, ArnNot*, NotIpAddress, NumericNotEquals, DateNotEquals), `...IfExists` and
`ForAllValues:`, which are true, and `Null`, as AWS's evaluation logic documents. `NotPrincipal`
names the principals a statement does not apply to.

The resource "*" is what AWS evaluates an action that takes no resource against: only a
Resource pattern matching the literal "*" names it. Where the sandbox does not know a value AWS
would know (a condition key it does not compute for that request: neither in KNOWN_KEYS nor under
a prefix the request's COMPUTED entry lists), it fails closed: an Allow statement conditioned on
it does not apply and a Deny statement does. docs/sandbox.md lists those keys.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
from enum import Enum

UNKNOWN = "*"  # an action with no resource, as AWS evaluates it

# Condition keys the sandbox computes whenever AWS would have them; a key among these that a
# request lacks is absent, as on AWS (so a condition on it fails unless ...IfExists or Null).
KNOWN_KEYS = {
    "aws:principalarn", "aws:principalaccount", "aws:principaltype", "aws:userid",
    "aws:sourceip", "aws:securetransport", "aws:viaawsservice", "aws:calledvia",
    "sts:externalid", "sts:sourceidentity", "kms:viaservice", "kms:calleraccount",
    "kms:grantisforawsresource", "kms:grantoperations", "iam:passedtoservice", "iam:awsservicename",
    # requests reach the sandbox over loopback, never through a VPC or its endpoints
    "aws:sourcevpc", "aws:sourcevpce", "aws:vpcsourceip",
    # set on the calls that carry them (tag-on-create, a KMS key with aliases), else absent
    "ec2:createaction", "kms:resourcealiases",
}


# A context entry listing key prefixes the sandbox computed for this request (e.g. the resource's
# tags): a key with such a prefix that is absent is absent, as on AWS.
COMPUTED = "sandbox:computed"
# A context entry (a list) the evaluation appends the keys it could not compute to, for the
# denial's message.
UNCOMPUTED = "sandbox:uncomputed"


class Result(Enum):
    ALLOW = "allow"
    DENY = "deny"
    NONE = "none"


def document(policy) -> dict:
    """A policy document from its JSON text (URL-decoded already) or a dict."""
    return json.loads(policy) if isinstance(policy, str) else policy


def statements(policy) -> list[dict]:
    found = document(policy).get("Statement", [])
    return found if isinstance(found, list) else [found]


def evaluate(policies, action: str, resource: str, context: dict,
             principal: dict | None = None) -> Result:
    """ALLOW, DENY or NONE for one request against a set of policies. `principal` is given for
    resource policies: {"arn": ..., "account": ..., "service": ...}."""
    allowed = False
    for policy in policies:
        for statement in statements(policy):
            if not _matches(statement, action, resource, context, principal):
                continue
            if statement.get("Effect") == "Deny":
                return Result.DENY
            allowed = True
    return Result.ALLOW if allowed else Result.NONE


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


as_list = _as_list


def action_matches(pattern: str, action: str) -> bool:
    return _wild(pattern, action, case=False)


def _wild(pattern: str, value: str, case: bool = True) -> bool:
    if not case:
        pattern, value = pattern.lower(), value.lower()
    # fnmatch's [ ] classes are not IAM syntax: escape them
    pattern = pattern.replace("[", "[[]")
    return fnmatch.fnmatchcase(value, pattern)


def _matches(statement: dict, action: str, resource: str, context: dict,
             principal: dict | None) -> bool:
    if "Action" in statement:
        if not any(_wild(a, action, case=False) for a in _as_list(statement["Action"])):
            return False
    elif any(_wild(a, action, case=False) for a in _as_list(statement.get("NotAction"))):
        return False
    if principal is not None and not principal_matches(statement, principal):
        return False
    if principal is None and ("Principal" in statement or "NotPrincipal" in statement):
        return False
    if not _resource_matches(statement, resource):
        return False
    met = conditions_met(statement.get("Condition", {}), context)
    if met is None:  # a key the sandbox cannot compute: fail closed
        return statement.get("Effect") == "Deny"
    return met


def _resource_matches(statement: dict, resource: str) -> bool:
    if "Resource" in statement:
        return any(_wild(p, resource) for p in _as_list(statement["Resource"]))
    if "NotResource" in statement:
        return not any(_wild(p, resource) for p in _as_list(statement["NotResource"]))
    return True  # trust policies name no resource


def principal_matches(statement: dict, principal: dict) -> bool:
    """Does the statement's Principal name the caller? `principal` holds the caller's ARNs
    ("arns"), or its account ("account": a statement naming the account's root or id names
    every identity of it, whose own identity policies then decide), or "anonymous". A
    NotPrincipal statement applies to everyone it does not name: AWS evaluates it for the
    caller's account as well as the caller, so a caller is left out only when both its own ARN
    and its account are named (`identity` holds the whole caller when `principal` is one side)."""
    if "NotPrincipal" in statement:
        return not _named_by_not_principal(statement["NotPrincipal"],
                                           principal.get("identity", principal))
    named = statement.get("Principal")
    if named == "*":
        return True
    if not isinstance(named, dict):
        return False
    aws = _as_list(named.get("AWS"))
    if "*" in aws:
        return True
    if principal.get("anonymous"):
        return False
    if any(arn in principal.get("arns", ()) for arn in aws):
        return True
    account = principal.get("account")
    if account and any(arn == account or _wild(f"arn:*:iam::{account}:root", arn)
                       for arn in aws):
        return True
    return principal.get("service") in _as_list(named.get("Service"))


def _named_by_not_principal(named, principal: dict) -> bool:
    if principal.get("anonymous") or not isinstance(named, dict):
        return False
    if principal.get("service"):
        return principal["service"] in _as_list(named.get("Service"))
    aws = _as_list(named.get("AWS"))
    account = principal.get("account")
    by_arn = any(arn in principal.get("arns", ()) for arn in aws)
    by_account = bool(account) and any(
        arn == account or _wild(f"arn:*:iam::{account}:root", arn) for arn in aws)
    return by_arn and by_account


# -- conditions ---------------------------------------------------------------------------------


def conditions_met(conditions: dict, context: dict) -> bool | None:
    """True or False; None when no condition is false but one needs a key the sandbox cannot
    compute for this request."""
    lowered = {k.lower(): v for k, v in context.items()}
    unknown = False
    for operator, pairs in conditions.items():
        for key, expected in pairs.items():
            met = _condition(operator, key.lower(), _as_list(expected), lowered)
            if met is False:
                return False
            if met is None:
                unknown = True
                lowered.get(UNCOMPUTED.lower(), []).append(key)
    return None if unknown else True


def computed(key: str, context: dict) -> bool:
    """Does the sandbox know this key's value (or its absence) for the request?"""
    key = key.lower()
    prefixes = context.get(COMPUTED.lower(), ()) or context.get(COMPUTED, ())
    return key in context or key in KNOWN_KEYS or any(key.startswith(p) for p in prefixes)


def _negated(op: str) -> bool:
    return op.startswith(("StringNot", "ArnNot")) or op in (
        "NotIpAddress", "NumericNotEquals", "DateNotEquals")


def _condition(operator: str, key: str, expected: list, context: dict) -> bool | None:
    quantifier, _, op = operator.rpartition(":")
    if key not in context and not computed(key, context):
        return None
    if op == "Null":
        return (key not in context) == (str(expected[0]).lower() == "true")
    if_exists = op.endswith("IfExists")
    op = op.removesuffix("IfExists")
    test = _OPERATORS.get(op)
    if test is None:
        return None  # an operator the sandbox does not evaluate: fail closed
    if key not in context:
        if quantifier == "ForAnyValue":
            return if_exists
        return if_exists or quantifier == "ForAllValues" or _negated(op)
    values = _as_list(context[key])
    negated = _negated(op)
    if quantifier == "ForAllValues":
        return all(test(v, expected) for v in values)
    if negated and quantifier != "ForAnyValue":
        return all(test(v, expected) for v in values)
    return any(test(v, expected) for v in values)


def _str(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(value) -> float:
    return float(value)


def _ip(value: str, expected: list) -> bool:
    try:
        address = ipaddress.ip_address(value)
        return any(address in ipaddress.ip_network(str(c), strict=False) for c in expected)
    except ValueError:
        return False


_OPERATORS = {
    "StringEquals": lambda v, e: _str(v) in map(_str, e),
    "StringNotEquals": lambda v, e: _str(v) not in map(_str, e),
    "StringEqualsIgnoreCase": lambda v, e: _str(v).lower() in (_str(x).lower() for x in e),
    "StringNotEqualsIgnoreCase": lambda v, e: _str(v).lower() not in (_str(x).lower() for x in e),
    "StringLike": lambda v, e: any(_wild(_str(x), _str(v)) for x in e),
    "StringNotLike": lambda v, e: not any(_wild(_str(x), _str(v)) for x in e),
    "ArnEquals": lambda v, e: any(_wild(_str(x), _str(v)) for x in e),
    "ArnLike": lambda v, e: any(_wild(_str(x), _str(v)) for x in e),
    "ArnNotEquals": lambda v, e: not any(_wild(_str(x), _str(v)) for x in e),
    "ArnNotLike": lambda v, e: not any(_wild(_str(x), _str(v)) for x in e),
    "Bool": lambda v, e: _str(v).lower() in (_str(x).lower() for x in e),
    "IpAddress": lambda v, e: _ip(_str(v), e),
    "NotIpAddress": lambda v, e: not _ip(_str(v), e),
    "NumericEquals": lambda v, e: any(_number(v) == _number(x) for x in e),
    "NumericNotEquals": lambda v, e: all(_number(v) != _number(x) for x in e),
    "NumericLessThan": lambda v, e: any(_number(v) < _number(x) for x in e),
    "NumericLessThanEquals": lambda v, e: any(_number(v) <= _number(x) for x in e),
    "NumericGreaterThan": lambda v, e: any(_number(v) > _number(x) for x in e),
    "NumericGreaterThanEquals": lambda v, e: any(_number(v) >= _number(x) for x in e),
}
