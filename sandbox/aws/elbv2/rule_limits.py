"""Listener rules hold at most 3 values per condition and 5 per rule, as on AWS.

An Application Load Balancer rule's condition (host-header, path-pattern, http-header,
source-ip, …) takes up to three match evaluations, and a rule up to five in all
(https://docs.aws.amazon.com/elasticloadbalancing/latest/application/rule-condition-types.html);
CreateRule and ModifyRule refuse more with ValidationError. moto took any number.
"""

from __future__ import annotations

from pathlib import Path

from sandbox.aws import seams

PER_CONDITION, PER_RULE = 3, 5
CONFIGS = ("HostHeaderConfig", "PathPatternConfig", "HttpHeaderConfig", "QueryStringConfig",
           "HttpRequestMethodConfig", "SourceIpConfig")


def apply(state_dir: Path) -> None:
    from moto.elbv2.responses import ELBV2Response

    for name in ("create_rule", "modify_rule"):
        seams.wrap(ELBV2Response, name, _checked,
                   signature="(self) -> moto.core.responses.ActionResult", owner=__name__)


def _checked(original):
    def call(self):
        check(self._get_params().get("Conditions") or [])
        return original(self)

    return call


def values_of(condition: dict) -> list:
    found = list(condition.get("Values") or [])
    for config in CONFIGS:
        found += list((condition.get(config) or {}).get("Values") or [])
    return found


def check(conditions: list[dict]) -> None:
    from moto.elbv2.exceptions import ELBClientError

    total = 0
    for condition in conditions:
        count = len(values_of(condition))
        if count > PER_CONDITION:
            raise ELBClientError("ValidationError", f"A condition can only have '{PER_CONDITION}' "
                                 f"values; the {condition.get('Field')} condition has {count}")
        total += count
    if total > PER_RULE:
        raise ELBClientError("ValidationError",
                             f"A rule can only have '{PER_RULE}' condition values; it has {total}")
