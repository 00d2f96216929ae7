"""CreateAutoScalingGroup right after CreateLaunchTemplate meets Auto Scaling not knowing the
template yet (sandbox/aws/autoscaling/template_propagation.py): a deploy retries until it does,
and one that fails there leaves no `<cluster>-vNNN` template behind to make the next deploy fail
AlreadyExists."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from orchestrator import environment, groups, operations
from tests.deploy_helpers import make_image

GROUP = "hello-web-v001"


def templates(daws) -> list[str]:
    found = daws.client("ec2").describe_launch_templates()["LaunchTemplates"]
    return [t["LaunchTemplateName"] for t in found if t["LaunchTemplateName"].startswith(
        "hello-web-")]


def target_groups(daws) -> list[str]:
    found = daws.client("elbv2").describe_target_groups()["TargetGroups"]
    return [t["TargetGroupName"] for t in found if t["TargetGroupName"].startswith("hello-web-")]


def test_a_deploy_retries_until_auto_scaling_knows_the_template(clean_sandbox, kaws, daws,
                                                                  outputs):
    make_image(daws, "1.0.0")

    def back_to_speed(step, runner):
        if step.action == "create":
            clean_sandbox.set_time_scale(None)

    clean_sandbox.set_time_scale(0.2)  # the template is unknown to Auto Scaling for 0.4 s
    try:
        result = operations.deploy(kaws, version="1.0.0", observer=back_to_speed)
    finally:
        clean_sandbox.set_time_scale(None)
    assert result["result"] == "ok"
    assert result["api_calls_by_operation"]["autoscaling:CreateAutoScalingGroup"] >= 2
    assert [g["name"] for g in operations.status(kaws)["server_groups"]] == [GROUP]


def test_a_deploy_failing_at_the_group_leaves_nothing_the_next_one_trips_on(
        clean_sandbox, kaws, daws, outputs, monkeypatch):
    make_image(daws, "1.0.0")
    monkeypatch.setattr(groups, "TEMPLATE_PROPAGATION", 1)  # give up after 1 s
    clean_sandbox.set_time_scale(50)  # the template stays unknown for 100 s
    try:
        with pytest.raises(ClientError, match="valid fully-formed launch template"):
            operations.deploy(kaws, version="1.0.0")
    finally:
        clean_sandbox.set_time_scale(None)
    assert templates(daws) == [] and target_groups(daws) == []
    monkeypatch.undo()
    assert operations.deploy(kaws, version="1.0.0")["result"] == "ok"
    assert [g["name"] for g in operations.status(kaws)["server_groups"]] == [GROUP]


def test_a_template_left_by_a_stopped_deploy_is_replaced(clean_sandbox, kaws, daws, outputs):
    make_image(daws, "1.0.0")
    env = environment.load(kaws)
    env.client("ec2").create_launch_template(  # a deploy killed between the two creates
        LaunchTemplateName=GROUP, LaunchTemplateData={"InstanceType": "t3.micro"},
        TagSpecifications=[{"ResourceType": "launch-template", "Tags": [
            {"Key": "kiln:managed-by", "Value": "kiln"},
            {"Key": "kiln:cluster", "Value": "hello-web"}]}])
    assert operations.deploy(kaws, version="1.0.0")["result"] == "ok"
    assert templates(daws) == [GROUP]
