"""sandbox/aws/autoscaling/lifecycle_hooks.py: a launching instance waits in Pending:Wait for its
group's launch hook, as on AWS: CONTINUE puts it InService, ABANDON (or a heartbeat timeout whose
default result is ABANDON) terminates and replaces it, a heartbeat restarts the timeout.

The groups launch from a plain image (no sandbox machine boots): the hook's states are Auto
Scaling's own. CompleteLifecycleAction is called here as the instance's boot script would.
"""

from __future__ import annotations

import time

import boto3
import pytest
from botocore.exceptions import ClientError

HOOK = "launch-health"


def until(check, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("never came to pass")


def hooked_group(name: str, capacity: int, timeout: int, default: str = "ABANDON"):
    """A group made empty, given its launch hook, then scaled: every instance is hooked."""
    ec2, scaling = boto3.client("ec2"), boto3.client("autoscaling")
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    template = ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
        "ImageId": "ami-12c6146b", "InstanceType": "t3.micro"})["LaunchTemplate"]
    scaling.create_auto_scaling_group(
        AutoScalingGroupName=name, MinSize=0, MaxSize=4, DesiredCapacity=0,
        VPCZoneIdentifier=subnet,
        LaunchTemplate={"LaunchTemplateId": template["LaunchTemplateId"], "Version": "1"})
    scaling.put_lifecycle_hook(AutoScalingGroupName=name, LifecycleHookName=HOOK,
                               LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
                               HeartbeatTimeout=timeout, DefaultResult=default)
    scaling.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=capacity)
    return scaling


def states(scaling, name: str) -> dict[str, str]:
    (group,) = scaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])[
        "AutoScalingGroups"]
    return {i["InstanceId"]: i["LifecycleState"] for i in group["Instances"]}


def test_continue_puts_in_service_and_abandon_replaces(clean_sandbox):
    scaling = hooked_group("hooked", 2, timeout=3600)  # 7 s at the default time scale
    waiting = states(scaling, "hooked")
    assert sorted(waiting.values()) == ["Pending:Wait", "Pending:Wait"]
    kept, dropped = sorted(waiting)
    described = scaling.describe_auto_scaling_instances(InstanceIds=[kept])[
        "AutoScalingInstances"]
    assert described[0]["LifecycleState"] == "Pending:Wait"

    scaling.record_lifecycle_action_heartbeat(AutoScalingGroupName="hooked",
                                              LifecycleHookName=HOOK, InstanceId=kept)
    scaling.complete_lifecycle_action(AutoScalingGroupName="hooked", LifecycleHookName=HOOK,
                                      InstanceId=kept, LifecycleActionResult="CONTINUE")
    until(lambda: states(scaling, "hooked").get(kept) == "InService")

    scaling.complete_lifecycle_action(AutoScalingGroupName="hooked", LifecycleHookName=HOOK,
                                      InstanceId=dropped, LifecycleActionResult="ABANDON")
    now = states(scaling, "hooked")
    assert dropped not in now and len(now) == 2  # replaced, and the new one waits in turn
    assert [s for i, s in now.items() if i != kept] == ["Pending:Wait"]
    instance = boto3.client("ec2").describe_instances(InstanceIds=[dropped])[
        "Reservations"][0]["Instances"][0]
    assert instance["State"]["Name"] in ("shutting-down", "terminated")
    (activity,) = scaling.describe_scaling_activities(AutoScalingGroupName="hooked")[
        "Activities"]
    assert activity["StatusCode"] == "Cancelled"
    assert dropped in activity["Description"]
    assert "Lifecycle Action Completed with ABANDON Result" in activity["StatusMessage"]

    # The abandoned instance has no action left to complete.
    with pytest.raises(ClientError, match=f"No active Lifecycle Action found with instance "
                                          f"ID {dropped}"):
        scaling.complete_lifecycle_action(AutoScalingGroupName="hooked",
                                          LifecycleHookName=HOOK, InstanceId=dropped,
                                          LifecycleActionResult="CONTINUE")
    with pytest.raises(ClientError, match="CONTINUE or ABANDON"):
        scaling.complete_lifecycle_action(AutoScalingGroupName="hooked",
                                          LifecycleHookName=HOOK, InstanceId=kept,
                                          LifecycleActionResult="MAYBE")


def test_the_heartbeat_timeout_applies_the_default_result(clean_sandbox):
    clean_sandbox.set_time_scale(0.005)  # the hook's 300 s: 1.5 real seconds
    try:
        scaling = hooked_group("beating", 1, timeout=300, default="CONTINUE")
        (instance,) = states(scaling, "beating")
        time.sleep(1.0)
        scaling.record_lifecycle_action_heartbeat(AutoScalingGroupName="beating",
                                                  LifecycleHookName=HOOK, InstanceId=instance)
        time.sleep(1.0)  # past the first timeout, inside the one the heartbeat restarted
        assert states(scaling, "beating") == {instance: "Pending:Wait"}
        until(lambda: states(scaling, "beating") == {instance: "InService"})

        scaling = hooked_group("silent", 1, timeout=60)  # ABANDON after 0.3 s
        (first,) = states(scaling, "silent")
        until(lambda: first not in states(scaling, "silent")
              and len(states(scaling, "silent")) == 1)
        activities = scaling.describe_scaling_activities(AutoScalingGroupName="silent")[
            "Activities"]
        assert activities[-1]["StatusCode"] == "Cancelled"
        assert first in activities[-1]["Description"]
        assert "abandoned: Heartbeat Timeout" in activities[-1]["StatusMessage"]
    finally:
        clean_sandbox.set_time_scale(None)


def test_an_instance_joins_its_target_groups_only_when_its_launch_hook_continues(clean_sandbox):
    """As on AWS, a load-balanced group's new instance is registered with its target groups
    after its launch hooks complete, not while it waits: the hook decides when traffic comes."""
    ec2, elb = boto3.client("ec2"), boto3.client("elbv2")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    target_group = elb.create_target_group(Name="hooked-web", Protocol="HTTP", Port=8080,
                                           VpcId=vpc)["TargetGroups"][0]["TargetGroupArn"]
    scaling = hooked_group("hooked-web", 0, timeout=3600)
    scaling.attach_load_balancer_target_groups(AutoScalingGroupName="hooked-web",
                                               TargetGroupARNs=[target_group])
    scaling.set_desired_capacity(AutoScalingGroupName="hooked-web", DesiredCapacity=2)

    def targets() -> set[str]:
        return {t["Target"]["Id"] for t in elb.describe_target_health(
            TargetGroupArn=target_group)["TargetHealthDescriptions"]}

    waiting = states(scaling, "hooked-web")
    assert sorted(waiting.values()) == ["Pending:Wait", "Pending:Wait"]
    assert targets() == set()
    kept = sorted(waiting)[0]
    scaling.complete_lifecycle_action(AutoScalingGroupName="hooked-web", LifecycleHookName=HOOK,
                                      InstanceId=kept, LifecycleActionResult="CONTINUE")
    until(lambda: states(scaling, "hooked-web").get(kept) == "InService")
    assert targets() == {kept}
