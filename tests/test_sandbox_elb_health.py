"""sandbox/aws/elbv2/target_health.py: target health as an ALB reports it."""

import boto3
import pytest

from tests.deploy_helpers import register_image


@pytest.fixture
def lb(clean_sandbox):
    clean_sandbox.set_time_scale(0)  # health checks pass at once (test_sandbox_timing: `initial`)
    yield _balancer()
    clean_sandbox.set_time_scale(None)


def _balancer():
    ec2, elbv2 = boto3.client("ec2"), boto3.client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{n}.0/24",
                                 AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
               for n, z in ((1, "a"), (2, "b"))]
    balancer = elbv2.create_load_balancer(Name="lb", Subnets=subnets)["LoadBalancers"][0]
    tg = elbv2.create_target_group(Name="tg", Protocol="HTTP", Port=80,
                                   VpcId=vpc)["TargetGroups"][0]["TargetGroupArn"]
    listener = elbv2.create_listener(
        LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=80,
        DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503"}}]
    )["Listeners"][0]["ListenerArn"]
    ec2.create_launch_template(LaunchTemplateName="lt-health", LaunchTemplateData={
        "ImageId": register_image(ec2, "elb-health-test"), "InstanceType": "t3.micro"})
    boto3.client("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName="asg", LaunchTemplate={"LaunchTemplateName": "lt-health"}, MinSize=0,
        MaxSize=3, DesiredCapacity=2, VPCZoneIdentifier=",".join(subnets), TargetGroupARNs=[tg])
    return {"tg": tg, "listener": listener}


def states(tg):
    health = boto3.client("elbv2").describe_target_health(TargetGroupArn=tg)
    return sorted(d["TargetHealth"]["State"] for d in health["TargetHealthDescriptions"])


def forward(lb):
    boto3.client("elbv2").modify_listener(ListenerArn=lb["listener"], DefaultActions=[
        {"Type": "forward", "ForwardConfig": {"TargetGroups": [
            {"TargetGroupArn": lb["tg"], "Weight": 0}]}}])


def test_target_group_without_listener_is_unused_then_healthy(lb):
    assert states(lb["tg"]) == ["unused", "unused"]
    forward(lb)  # weight 0 still counts as in use: the ALB health-checks it
    assert states(lb["tg"]) == ["healthy", "healthy"]


def test_instance_marked_unhealthy_fails_its_health_check(lb):
    forward(lb)
    autoscaling = boto3.client("autoscaling")
    instances = autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=["asg"])["AutoScalingGroups"][0]["Instances"]
    autoscaling.set_instance_health(InstanceId=instances[0]["InstanceId"],
                                    HealthStatus="Unhealthy")
    health = boto3.client("elbv2").describe_target_health(TargetGroupArn=lb["tg"])
    by_id = {d["Target"]["Id"]: d["TargetHealth"] for d in health["TargetHealthDescriptions"]}
    assert by_id[instances[0]["InstanceId"]] == {
        "State": "unhealthy", "Reason": "Target.FailedHealthChecks",
        "Description": "Health checks failed"}
    assert by_id[instances[1]["InstanceId"]]["State"] == "healthy"


def test_scale_in_deregisters_terminated_instances(lb):
    forward(lb)
    boto3.client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName="asg", MinSize=0, DesiredCapacity=0)
    assert states(lb["tg"]) == []
