"""A new launch template is not yet known to Auto Scaling, as on AWS.

EC2 and Auto Scaling are eventually consistent with each other: CreateAutoScalingGroup (or
UpdateAutoScalingGroup) right after CreateLaunchTemplate or CreateLaunchTemplateVersion can be
refused while the template propagates, with ValidationError "You must use a valid fully-formed
launch template…" (https://docs.aws.amazon.com/autoscaling/ec2/userguide/ts-as-launch-template.html,
https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html). Here a template,
or the version a request names, is unknown to Auto Scaling for PROPAGATION seconds of AWS time
after it was made (times `kiln.sandbox.time_scale`, sandbox/clock.py). moto knew it at once.
"""

from __future__ import annotations

from pathlib import Path

from sandbox import clock
from sandbox.aws import seams

PROPAGATION = 2.0  # AWS seconds before Auto Scaling can use a new template or version
ACTION_RESULT = "(self) -> moto.core.responses.ActionResult"


def apply(state_dir: Path) -> None:
    from moto.autoscaling.responses import AutoScalingResponse

    for name in ("create_auto_scaling_group", "update_auto_scaling_group"):
        seams.wrap(AutoScalingResponse, name, _refuse_unpropagated, signature=ACTION_RESULT,
                   owner=__name__)


def _refuse_unpropagated(original):
    def call(self):
        spec = self._get_param("LaunchTemplate") or (
            (self._get_param("MixedInstancesPolicy") or {}).get("LaunchTemplate", {})
            .get("LaunchTemplateSpecification"))
        if spec:
            check(self.current_account, self.region, spec)
        return original(self)

    return call


def check(account: str, region: str, spec: dict) -> None:
    """Refuse a template (or version) made less than PROPAGATION AWS seconds ago."""
    from moto.autoscaling.exceptions import ValidationError
    from moto.core.utils import utcnow
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[account][region]
    template_id, name = spec.get("LaunchTemplateId"), spec.get("LaunchTemplateName")
    try:
        template = (backend.get_launch_template(template_id) if template_id
                    else backend.get_launch_template_by_name(name))
    except Exception:  # noqa: BLE001 - an unknown template is moto's own answer to give
        return
    made = template.create_time
    version = str(spec.get("Version") or "")
    if version.isdigit():
        found = [v for v in template.versions if str(v.number) == version]
        made = found[0].create_time if found else made
    age = (utcnow() - made).total_seconds()
    if age < PROPAGATION * clock.scale():
        raise ValidationError(
            "You must use a valid fully-formed launch template. The specified launch template, "
            f"with template ID {template.id}, does not exist.")
