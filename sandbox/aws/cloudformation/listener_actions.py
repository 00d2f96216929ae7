"""A listener's DefaultActions in a template may forward with a ForwardConfig, as on AWS.

AWS::ElasticLoadBalancingV2::Listener takes a `forward` action either with TargetGroupArn or
with ForwardConfig (weighted target groups, stickiness)
(https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-properties-elasticloadbalancingv2-listener-action.html).
moto's CloudFormation read only TargetGroupArn and failed on the other form with a KeyError.
Here a ForwardConfig forward is kept as ModifyListener keeps it.
"""

from __future__ import annotations

from pathlib import Path

from sandbox.aws import seams

SIGNATURE = "(self, properties: dict[str, typing.Any]) -> list[dict[str, typing.Any]]"


def apply(state_dir: Path) -> None:
    from moto.elbv2.models import ELBv2Backend

    seams.wrap(ELBv2Backend, "convert_and_validate_properties", _with_forward_config,
               signature=SIGNATURE, owner=__name__)


def _with_forward_config(original):
    def convert(self, properties):
        actions = properties["DefaultActions"]
        weighted = {i: as_request(a) for i, a in enumerate(actions)
                    if a.get("Type") == "forward" and "ForwardConfig" in a}
        if not weighted:
            return original(self, properties)
        rest = [a for i, a in enumerate(actions) if i not in weighted]
        converted = iter(original(self, {**properties, "DefaultActions": rest}) if rest else [])
        return [weighted[i] if i in weighted else next(converted) for i in range(len(actions))]

    return convert


def as_request(action: dict) -> dict:
    """The action as moto keeps ModifyListener's (a template may give numbers as strings)."""
    config = action["ForwardConfig"]
    result = {"Type": "forward", "ForwardConfig": {"TargetGroups": [
        {"TargetGroupArn": tg["TargetGroupArn"], "Weight": int(tg.get("Weight", 1))}
        for tg in config.get("TargetGroups", [])]}}
    sticky = config.get("TargetGroupStickinessConfig")
    if sticky is not None:
        enabled = str(sticky.get("Enabled", False)).lower() == "true"
        result["ForwardConfig"]["TargetGroupStickinessConfig"] = {"Enabled": enabled}
    return result
