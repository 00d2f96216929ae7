"""sandbox/aws/autoscaling/template_propagation.py: Auto Scaling refuses a launch template (or
version) for PROPAGATION seconds of AWS time after it was made, then takes it, as on AWS."""

from __future__ import annotations

import time

import boto3
import pytest
from botocore.exceptions import ClientError

from sandbox.aws.autoscaling.template_propagation import PROPAGATION

SCALE = 1.0  # the propagation lasts PROPAGATION × SCALE real seconds


@pytest.fixture
def slow(clean_sandbox):
    clean_sandbox.set_time_scale(SCALE)
    yield clean_sandbox
    clean_sandbox.set_time_scale(None)


def group(scaling, subnet: str, template: str, version: str) -> None:
    scaling.create_auto_scaling_group(
        AutoScalingGroupName="propagating", MinSize=0, MaxSize=0, DesiredCapacity=0,
        VPCZoneIdentifier=subnet,
        LaunchTemplate={"LaunchTemplateId": template, "Version": version})


def test_a_new_template_is_refused_until_it_has_propagated(slow):
    session = boto3.Session()  # not the default session, whose clients wait (tests/conftest.py)
    ec2, scaling = session.client("ec2"), session.client("autoscaling")
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    made = time.monotonic()
    template = ec2.create_launch_template(
        LaunchTemplateName="propagating", LaunchTemplateData={
            "ImageId": "ami-12c6146b", "InstanceType": "t3.micro"})["LaunchTemplate"]
    with pytest.raises(ClientError) as refused:
        group(scaling, subnet, template["LaunchTemplateId"], "1")
    assert time.monotonic() - made < PROPAGATION * SCALE  # refused inside the window
    assert refused.value.response["Error"]["Code"] == "ValidationError"
    assert "valid fully-formed launch template" in str(refused.value)
    assert scaling.describe_auto_scaling_groups()["AutoScalingGroups"] == []
    time.sleep(PROPAGATION * SCALE - (time.monotonic() - made) + 0.1)
    group(scaling, subnet, template["LaunchTemplateId"], "1")
    (made_group,) = scaling.describe_auto_scaling_groups()["AutoScalingGroups"]
    assert made_group["LaunchTemplate"]["LaunchTemplateId"] == template["LaunchTemplateId"]
    # A new version propagates the same way before UpdateAutoScalingGroup may name it.
    ec2.create_launch_template_version(LaunchTemplateId=template["LaunchTemplateId"],
                                       LaunchTemplateData={"InstanceType": "t3.small"})
    with pytest.raises(ClientError, match="valid fully-formed launch template"):
        scaling.update_auto_scaling_group(AutoScalingGroupName="propagating", LaunchTemplate={
            "LaunchTemplateId": template["LaunchTemplateId"], "Version": "2"})
