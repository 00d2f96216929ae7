"""Deploy, canary and status against the sandbox: the happy paths and what they leave in AWS."""

import base64

import pytest

from orchestrator import operations
from tests.deploy_helpers import FAST, make_image


@pytest.fixture
def deploy_overrides():
    return FAST


def groups_by_name(result):
    return {g["name"]: g for g in result["server_groups"]}


def test_first_deploy_then_canary(kaws, daws, outputs):
    make_image(daws, "1.0.0")
    first = operations.deploy(kaws, version="1.0.0")
    assert first["result"] == "ok"
    status = groups_by_name(operations.status(kaws))
    v1 = status["hello-web-v001"]
    assert (v1["version"], v1["state"], v1["weight"], v1["desired"], v1["healthy"]) == (
        "1.0.0", "active", 100, 2, 2)

    ami = make_image(daws, "1.1.0")
    result = operations.canary(kaws, 10, version="1.1.0")
    assert result["result"] == "ok"
    assert result["api_calls"] > 0 and result["api_calls_by_operation"]
    status = groups_by_name(operations.status(kaws))
    v1, v2 = status["hello-web-v001"], status["hello-web-v002"]
    assert (v1["weight"], v2["weight"]) == (90, 10)
    assert (v2["version"], v2["ami"], v2["state"], v2["desired"], v2["healthy"]) == (
        "1.1.0", ami, "canary", 1, 1)


def test_server_group_resources_are_tagged_and_locked_down(kaws, daws, outputs):
    ami = make_image(daws, "1.0.0")
    operations.deploy(kaws, version="1.0.0")
    asg = daws.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=["hello-web-v001"])["AutoScalingGroups"][0]
    tags = {t["Key"]: t["Value"] for t in asg["Tags"]}
    assert tags["kiln:app"] == "hello-web" and tags["kiln:version"] == "1.0.0"
    assert tags["kiln:ami"] == ami and tags["kiln:cluster"] == "hello-web"
    assert tags["kiln:state"] == "active"
    assert set(asg["VPCZoneIdentifier"].split(",")) == set(outputs["SubnetIds"].split(","))
    template = daws.client("ec2").describe_launch_template_versions(
        LaunchTemplateId=asg["LaunchTemplate"]["LaunchTemplateId"])["LaunchTemplateVersions"][0]
    data = template["LaunchTemplateData"]
    assert data["ImageId"] == ami
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["IamInstanceProfile"]["Arn"] == outputs["InstanceProfileArn"]
    script = base64.b64decode(data["UserData"]).decode()
    assert "KILN_VERSION=1.0.0" in script and "KILN_SERVER_GROUP=hello-web-v001" in script
    tg = daws.client("elbv2").describe_tags(ResourceArns=asg["TargetGroupARNs"])
    tg_tags = {t["Key"]: t["Value"] for t in tg["TagDescriptions"][0]["Tags"]}
    assert tg_tags["kiln:server-group"] == "hello-web-v001"


def test_deploying_what_already_serves_changes_nothing(kaws, daws, outputs):
    make_image(daws, "1.0.0")
    operations.deploy(kaws, version="1.0.0")
    again = operations.deploy(kaws, version="1.0.0")
    assert again["result"] == "ok" and again["plan"]["steps"] == []
    assert "already serves all traffic from hello-web-v001" in again["plan"]["summary"]
    assert [g["name"] for g in operations.status(kaws)["server_groups"]] == ["hello-web-v001"]
