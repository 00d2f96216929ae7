"""iam:SimulatePrincipalPolicy, answered by the sandbox's own policy evaluator (moto does not
implement it).

As IAM's policy simulator does: the identity policies of the role or user PolicySourceArn names
are evaluated for each action on each resource (ResourceArns, "*" when none is given) with the
context entries the caller supplies; a condition key the caller did not supply is absent (so a
condition on it is false, a negated one true) and is listed in MissingContextValues. EvalDecision
is `allowed`, `explicitDeny` or `implicitDeny`.
"""

from __future__ import annotations

import re
from pathlib import Path

from sandbox.aws import seams
from sandbox.aws.iam import identities
from sandbox.aws.iam import policy as iam

_DECISIONS = {iam.Result.ALLOW: "allowed", iam.Result.DENY: "explicitDeny",
              iam.Result.NONE: "implicitDeny"}


def apply(state_dir: Path) -> None:
    from moto.iam.responses import IamResponse

    seams.add(IamResponse, "simulate_principal_policy", _simulate, owner=__name__)


def _simulate(self):
    from moto.core.responses import ActionResult
    from moto.iam.exceptions import NotFoundException

    params = {k: v[0] if isinstance(v, list) else v for k, v in self.querystring.items()}
    source = params.get("PolicySourceArn", "")
    policies = source_policies(source)
    if policies is None:
        raise NotFoundException(f"The principal {source} cannot be found.")
    context = context_entries(params)
    results = []
    for action in _members(params, "ActionNames"):
        for resource in _members(params, "ResourceArns") or ["*"]:
            decision = iam.evaluate(policies, action, resource, context)
            results.append({
                "EvalActionName": action, "EvalResourceName": resource,
                "EvalDecision": _DECISIONS[decision],
                "MissingContextValues": _missing(policies, action, context)})
    return ActionResult({"EvaluationResults": results, "IsTruncated": False})


def source_policies(arn: str) -> list | None:
    """The identity policies of the role or user an ARN names; None when there is none."""
    from moto.iam.exceptions import NotFoundException
    from moto.iam.models import iam_backends

    if ":role/" in arn:
        role = identities.role_by_arn(arn)
        if role is None:
            return None
        return list(role.policies.values()) + [_default(p) for p in
                                                role.managed_policies.values()]
    match = re.fullmatch(r"arn:aws:iam::(\d{12}):user/(?:.*/)?([^/]+)", arn)
    if not match:
        return None
    backend = iam_backends[match.group(1)]["aws"]
    try:
        user = backend.get_user(match.group(2))
    except NotFoundException:
        return None
    found = list(user.policies.values()) + [_default(p) for p in user.managed_policies.values()]
    for group in backend.get_groups_for_user(user.name):
        found += list(group.policies.values())
        found += [_default(p) for p in group.managed_policies.values()]
    return found


def _default(managed) -> str:
    return next(v for v in managed.versions if v.is_default).document


def _members(params: dict, name: str) -> list[str]:
    found = [(int(m.group(1)), v) for k, v in params.items()
             if (m := re.fullmatch(rf"{name}\.member\.(\d+)", k))]
    return [v for _, v in sorted(found)]


def context_entries(params: dict) -> dict:
    """ContextEntries as a request context: every key the caller did not give is absent."""
    context: dict = {iam.COMPUTED: [""]}
    for key, name in params.items():
        match = re.fullmatch(r"ContextEntries\.member\.(\d+)\.ContextKeyName", key)
        if not match:
            continue
        values = _members(params, f"ContextEntries\\.member\\.{match.group(1)}\\.ContextKeyValues")
        kind = params.get(f"ContextEntries.member.{match.group(1)}.ContextKeyType", "string")
        context[name] = values if kind.endswith("List") else (values[0] if values else "")
    return context


def _missing(policies: list, action: str, context: dict) -> list[str]:
    given = {k.lower() for k in context}
    found: list[str] = []
    for policy in policies:
        for statement in iam.statements(policy):
            if not any(iam.action_matches(a, action) for a in
                       iam.as_list(statement.get("Action"))):
                continue
            for pairs in (statement.get("Condition") or {}).values():
                found += [k for k in pairs if k.lower() not in given and k not in found]
    return found
