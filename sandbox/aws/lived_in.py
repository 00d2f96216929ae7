"""Lived-in accounts: what a real account already holds before Kiln first touches it.

With `kiln.sandbox.account_state: lived-in` (the state dir's `account-state` file; `new`, the
default, leaves moto's empty accounts), every account the sandbox serves holds, from its first
request on and again after every reset:
- the service-linked roles `AWSServiceRoleForAutoScaling` and `AWSServiceRoleForElasticLoad
  Balancing`, as IAM leaves them behind once any Auto Scaling group or load balancer was made;
- in every region: the default VPC with a default subnet per zone and its default security group
  (moto makes those in every account), and another team's resources, made by another tool and
  tagged as such: a security group, a launch template, an Auto Scaling group of no instances
  using it, and a target group.
So a template that creates a service-linked role fails as it does on AWS ("has been taken in this
account"), and Kiln's reads meet groups, templates and target groups that are not its own.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from sandbox.aws import seams
from sandbox.aws.iam.arns import LINKED_ROLES

STATE_FILE = "account-state"
STATES = ("new", "lived-in")
OTHER_TOOL = [{"Key": "managed-by", "Value": "terraform"}, {"Key": "team", "Value": "payments"}]
OTHER_NAME = "payments-web"
MARK = "_sandbox_lived_in"  # on a backend; moto's reset empties the backend's __dict__

_STATE_DIR: list[Path] = []
_LOCK = threading.Lock()


def apply(state_dir: Path) -> None:
    from moto.core.responses import BaseResponse

    _STATE_DIR[:] = [state_dir]
    seams.wrap(BaseResponse, "call_action", _settle_first, signature=CALL_ACTION,
               owner=__name__)


CALL_ACTION = "(self) -> 'TYPE_RESPONSE'"


def state() -> str:
    try:
        value = (_STATE_DIR[0] / STATE_FILE).read_text().strip()
    except (OSError, IndexError):
        return "new"
    return value if value in STATES else "new"


def _settle_first(original):
    def call_action(self):
        if state() == "lived-in":
            account, region = self.current_account, self.region
            if region and region not in ("aws", "global"):
                live_in(account, region)
        return original(self)

    return call_action


def live_in(account: str, region: str) -> None:
    """Give the account, and its region, what a lived-in account holds (once per reset)."""
    from moto.autoscaling.models import autoscaling_backends
    from moto.iam.models import iam_backends

    with _LOCK:
        iam = iam_backends[account]["aws"]
        if not iam.__dict__.get(MARK):
            _service_linked_roles(iam)
            iam.__dict__[MARK] = True
        scaling = autoscaling_backends[account][region]
        if not scaling.__dict__.get(MARK):
            _other_tools(account, region)
            scaling.__dict__[MARK] = True


def _service_linked_roles(iam) -> None:
    present = {role.path for role in iam.get_roles()}
    for service, name in LINKED_ROLES.items():
        if f"/aws-service-role/{service}/" in present:
            continue
        trust = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": [service]}, "Action": ["sts:AssumeRole"]}]}
        iam.create_role(name, json.dumps(trust), f"/aws-service-role/{service}/",
                        permissions_boundary=None, description="", tags=[],
                        max_session_duration="3600", linked_service=service)


def _other_tools(account: str, region: str) -> None:
    from moto.autoscaling.models import autoscaling_backends
    from moto.ec2.models import ec2_backends
    from moto.elbv2.models import elbv2_backends

    ec2 = ec2_backends[account][region]
    vpc = ec2.get_default_vpc() or ec2.create_default_vpc()
    subnets = [s.id for s in ec2.describe_subnets(filters={"vpc-id": [vpc.id]})]
    group = ec2.create_security_group(OTHER_NAME, "payments web servers", vpc.id,
                                      tags={t["Key"]: t["Value"] for t in OTHER_TOOL})
    template = ec2.create_launch_template(
        OTHER_NAME, "payments web servers",
        {"ImageId": "ami-0000000000payments", "InstanceType": "t3.micro",
         "SecurityGroupIds": [group.id]},
        {"launch-template": {t["Key"]: t["Value"] for t in OTHER_TOOL}})
    target_group = elbv2_backends[account][region].create_target_group(
        OTHER_NAME, protocol="HTTP", port=8080, vpc_id=vpc.id, target_type="instance",
        tags=OTHER_TOOL)
    tags = [{**tag, "ResourceId": OTHER_NAME, "ResourceType": "auto-scaling-group",
             "PropagateAtLaunch": True} for tag in OTHER_TOOL]
    autoscaling_backends[account][region].create_auto_scaling_group(
        name=OTHER_NAME, availability_zones=[], desired_capacity=0, max_size=0, min_size=0,
        launch_config_name="",
        launch_template={"LaunchTemplateId": template.id, "Version": "$Latest"},
        vpc_zone_identifier=",".join(subnets), default_cooldown=None, health_check_period=None,
        health_check_type="EC2", load_balancers=[], target_group_arns=[target_group.arn],
        placement_group=None, termination_policies=[], tags=tags)
