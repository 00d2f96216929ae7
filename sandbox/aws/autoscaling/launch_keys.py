"""Auto Scaling launches from encrypted snapshots only when the key lets it, as on AWS.

Auto Scaling launches a group's instances as its service-linked role
(`AWSServiceRoleForAutoScaling`). When the image's snapshots are encrypted with a KMS key whose
policy does not allow that role (kms:CreateGrant for an AWS resource, and kms:Decrypt) and no grant
gives it those operations, no instance starts: the group stays below its desired capacity and
DescribeScalingActivities lists a Failed launch, "Client.InternalError: Client error on launch",
as AWS reports it. (moto launched regardless and listed no activities.)
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from sandbox.aws import seams
from sandbox.aws.iam import identities
from sandbox.aws.iam import policy as iam

SERVICE_ROLE = "role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
NEEDED = ("kms:CreateGrant", "kms:Decrypt")


def apply(state_dir: Path) -> None:
    from moto.autoscaling.models import FakeAutoScalingGroup
    from moto.autoscaling.responses import AutoScalingResponse

    seams.wrap(FakeAutoScalingGroup, "replace_autoscaling_group_instances", _refusing,
               signature="(self, count_needed: 'int', propagated_tags: 'dict[str, str]') -> "
                         "'None'", owner=__name__)
    seams.replace(AutoScalingResponse, "describe_scaling_activities", _describe_activities,
                  signature="(self) -> moto.core.responses.ActionResult", owner=__name__)


def _refusing(launch):
    def replace_instances(self, count_needed, propagated_tags):
        refused = _refused_key(self)
        if refused:
            _record_failure(self, count_needed, refused)
            return None
        return launch(self, count_needed, propagated_tags)

    return replace_instances


def _refused_key(group) -> str | None:
    """The ARN of the image's key that Auto Scaling's role may not use, if any."""
    try:
        image = group.autoscaling_backend.ec2_backend.describe_images(ami_ids=[group.image_id])[0]
    except Exception:  # noqa: BLE001 - no such image: moto's own launch reports it
        return None
    snapshot = getattr(image, "ebs_snapshot", None)
    if snapshot is None or not snapshot.encrypted or not snapshot.kms_key_id:
        return None
    account, region = group.account_id, group.region
    arn = snapshot.kms_key_id
    if not arn.startswith("arn:"):
        arn = f"arn:aws:kms:{region}:{image.owner_id}:key/{arn}"
    key = identities.kms_key(arn, account, region)
    if key is None or not service_role_allowed(key, account, region):
        return arn
    return None


def service_role_allowed(key, account: str, region: str) -> bool:
    role_arn = f"arn:aws:iam::{account}:{SERVICE_ROLE}"
    context = {"aws:PrincipalArn": role_arn, "aws:PrincipalAccount": account,
               "kms:CallerAccount": account, "kms:GrantIsForAWSResource": True,
               "kms:ViaService": f"ec2.{region}.amazonaws.com", "aws:ViaAWSService": True}
    grants = [g for g in getattr(key, "grants", {}).values() if g.grantee_principal == role_arn]
    for action in NEEDED:
        operation = action.partition(":")[2]
        if any(operation in g.operations for g in grants):
            continue
        if key.account_id != account:
            return False  # another account's key: only a grant reaches the role
        result = iam.evaluate([key.policy] if key.policy else [], action, key.arn, context,
                              principal={"arns": [role_arn]})
        if result != iam.Result.ALLOW:
            return False
    return True


def _record_failure(group, count: int, key_arn: str) -> None:
    now = datetime.now(UTC)
    activities = group.__dict__.setdefault("_sandbox_activities", [])
    activities.insert(0, {
        "ActivityId": str(uuid.uuid4()), "AutoScalingGroupName": group.name,
        "Description": f"Launching a new EC2 instance. Status Reason: Client.InternalError: "
                       f"Client error on launch ({count} instance(s); KMS key {key_arn} does not "
                       f"allow {SERVICE_ROLE.rpartition('/')[2]})",
        "Cause": f"At {now:%Y-%m-%dT%H:%M:%SZ} an instance was started in response to a "
                 f"difference between desired and actual capacity",
        "StartTime": now, "EndTime": now, "StatusCode": "Failed",
        "StatusMessage": "Client.InternalError: Client error on launch", "Progress": 100,
        "Details": "{}",
    })


def _describe_activities(self):
    from moto.core.responses import ActionResult

    wanted = self._get_param("AutoScalingGroupName")
    groups = self.autoscaling_backend.autoscaling_groups
    found = []
    for name, group in groups.items():
        if wanted in (None, name):
            found += group.__dict__.get("_sandbox_activities", [])
    return ActionResult({"Activities": found})
