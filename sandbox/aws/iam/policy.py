"""IAM policy evaluation as AWS documents it, for the sandbox's access control.

One statement matches a request when its Action (or NotAction), Resource (or NotResource),
Principal (resource policies only) and every Condition match. An explicit Deny wins over any
Allow; no Allow means an implicit deny. Condition operators: String*, Arn*, Bool, Null, IpAddress,
NotIpAddress, Numeric*, with `...IfExists` and the `ForAnyValue:` / `ForAllValues:` set forms.

Where the sandbox does not know a value AWS would know, it says so with UNKNOWN instead of
guessing: a Resource pattern matches an UNKNOWN resource, and a condition on a key the sandbox
does not compute for that request (KNOWN_KEYS lists the ones it does) is taken as met. Those are
the gaps the README lists.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
from enum import Enum

UNKNOWN = "*"

# Condition keys the sandbox computes whenever AWS would have them; a key among these that a
# request lacks is absent, as on AWS (so a condition on it fails unless ...IfExists or Null).
KNOWN_KEYS = {
    "aws:principalarn", "aws:principalaccount", "aws:principaltype", "aws:userid",
    "aws:sourceip", "aws:securetransport", "aws:viaawsservice", "aws:calledvia",
    "sts:externalid", "kms:viaservice", "kms:calleraccount", "kms:grantisforawsresource",
    "kms:grantoperations", "iam:passedtoservice", "iam:awsservicename",
}


# A context entry listing key prefixes the sandbox computed for this request (e.g. the resource's
# tags): a key with such a prefix that is absent is absent, as on AWS.
COMPUTED = "sandbox:computed"


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
    return conditions_met(statement.get("Condition", {}), context)


def _resource_matches(statement: dict, resource: str) -> bool:
    if "Resource" in statement:
        patterns = _as_list(statement["Resource"])
        return resource == UNKNOWN or any(_wild(p, resource) for p in patterns)
    if "NotResource" in statement:
        return resource == UNKNOWN or not any(
            _wild(p, resource) for p in _as_list(statement["NotResource"]))
    return True  # trust policies name no resource


def principal_matches(statement: dict, principal: dict) -> bool:
    """Does the statement's Principal name the caller? `principal` holds the caller's ARNs
    ("arns"), or its account ("account": a statement naming the account's root or id names
    every identity of it, whose own identity policies then decide), or "anonymous"."""
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


# -- conditions ---------------------------------------------------------------------------------


def conditions_met(conditions: dict, context: dict) -> bool:
    lowered = {k.lower(): v for k, v in context.items()}
    for operator, pairs in conditions.items():
        for key, expected in pairs.items():
            if not _condition(operator, key.lower(), _as_list(expected), lowered):
                return False
    return True


def _condition(operator: str, key: str, expected: list, context: dict) -> bool:
    quantifier, _, op = operator.rpartition(":")
    if op == "Null":
        return (key not in context) == (str(expected[0]).lower() == "true")
    if_exists = op.endswith("IfExists")
    op = op.removesuffix("IfExists")
    if key not in context:
        computed = context.get(COMPUTED.lower(), ())
        if key not in KNOWN_KEYS and not any(key.startswith(p) for p in computed):
            return True  # a value the sandbox does not compute: a listed gap
        return if_exists or quantifier == "ForAllValues"
    values = _as_list(context[key])
    test = _OPERATORS.get(op)
    if test is None:
        return True  # an operator Kiln's policies do not use
    negated = op.startswith("StringNot") or op.startswith("ArnNot") or op == "NotIpAddress" \
        or op == "NumericNotEquals"
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
