"""sandbox/aws/quotas.py: AWS's quotas and validation where moto has none."""

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.deploy_helpers import register_image


def error_of(call, **params) -> dict:
    with pytest.raises(ClientError) as raised:
        call(**params)
    return raised.value.response["Error"]


@pytest.fixture
def vpc(clean_sandbox):
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.8.{n}.0/24",
                                 AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
               for n, z in ((1, "a"), (2, "b"))]
    return {"vpc": vpc, "subnets": subnets}


def test_a_forward_action_takes_at_most_five_target_groups(vpc):
    elbv2 = boto3.client("elbv2")
    balancer = elbv2.create_load_balancer(Name="lb", Subnets=vpc["subnets"])["LoadBalancers"][0]
    groups = [elbv2.create_target_group(Name=f"tg{n}", Protocol="HTTP", Port=80, VpcId=vpc["vpc"])[
        "TargetGroups"][0]["TargetGroupArn"] for n in range(6)]

    def forward(arns):
        return [{"Type": "forward", "ForwardConfig": {"TargetGroups": [
            {"TargetGroupArn": arn, "Weight": 1} for arn in arns]}}]

    error = error_of(elbv2.create_listener, LoadBalancerArn=balancer["LoadBalancerArn"],
                     Protocol="HTTP", Port=80, DefaultActions=forward(groups))
    assert error["Code"] == "ValidationError" and "less than or equal to 5" in error["Message"]
    listener = elbv2.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP",
                                     Port=80, DefaultActions=forward(groups[:5]))[
        "Listeners"][0]["ListenerArn"]
    error = error_of(elbv2.modify_listener, ListenerArn=listener, DefaultActions=forward(groups))
    assert error["Code"] == "ValidationError"
    error = error_of(elbv2.create_rule, ListenerArn=listener, Priority=1, Actions=forward(groups),
                     Conditions=[{"Field": "path-pattern", "Values": ["/a"]}])
    assert error["Code"] == "ValidationError"
    elbv2.modify_listener(ListenerArn=listener, DefaultActions=forward(groups[1:]))


def test_tags_follow_aws_limits(vpc):
    ec2 = boto3.client("ec2")
    resource = [vpc["vpc"]]
    for key, value in (("k" * 129, "v"), ("aws:mine", "v"), ("ok", "v" * 257), ("", "v")):
        error = error_of(ec2.create_tags, Resources=resource, Tags=[{"Key": key, "Value": value}])
        assert error["Code"] == "InvalidParameterValue", key
    ec2.create_tags(Resources=resource, Tags=[{"Key": "k" * 128, "Value": "v" * 256}])
    ec2.create_tags(Resources=resource, Tags=[{"Key": f"t{n}", "Value": "x"} for n in range(49)])
    error = error_of(ec2.create_tags, Resources=resource, Tags=[{"Key": "one-more", "Value": "x"}])
    assert error["Code"] == "TagLimitExceeded"
    elbv2 = boto3.client("elbv2")
    tg = elbv2.create_target_group(Name="tags", Protocol="HTTP", Port=80, VpcId=vpc["vpc"])[
        "TargetGroups"][0]["TargetGroupArn"]
    error = error_of(elbv2.add_tags, ResourceArns=[tg], Tags=[{"Key": "k", "Value": "v" * 257}])
    assert error["Code"] == "ValidationError"


def test_auto_scaling_groups_keep_min_desired_max_and_tag_limits(vpc):
    ec2, autoscaling = boto3.client("ec2"), boto3.client("autoscaling")
    ec2.create_launch_template(LaunchTemplateName="lt-quota", LaunchTemplateData={
        "ImageId": register_image(ec2, "quota-test"), "InstanceType": "t3.micro"})
    base = {"AutoScalingGroupName": "asg", "LaunchTemplate": {"LaunchTemplateName": "lt-quota"},
            "VPCZoneIdentifier": ",".join(vpc["subnets"])}
    error = error_of(autoscaling.create_auto_scaling_group, **base, MinSize=1, MaxSize=2,
                     DesiredCapacity=3)
    assert error["Code"] == "ValidationError" and "between" in error["Message"]
    error = error_of(autoscaling.create_auto_scaling_group, **base, MinSize=3, MaxSize=2)
    assert error["Code"] == "ValidationError"
    many = [{"Key": f"t{n}", "Value": "x", "PropagateAtLaunch": False} for n in range(51)]
    error = error_of(autoscaling.create_auto_scaling_group, **base, MinSize=0, MaxSize=2,
                     Tags=many)
    assert error["Code"] == "ValidationError" and "50" in error["Message"]
    autoscaling.create_auto_scaling_group(**base, MinSize=0, MaxSize=2, DesiredCapacity=1)
    error = error_of(autoscaling.update_auto_scaling_group, AutoScalingGroupName="asg",
                     DesiredCapacity=3)
    assert error["Code"] == "ValidationError"
    error = error_of(autoscaling.update_auto_scaling_group, AutoScalingGroupName="asg",
                     MinSize=2, MaxSize=2, DesiredCapacity=1)
    assert error["Code"] == "ValidationError"
    error = error_of(autoscaling.set_desired_capacity, AutoScalingGroupName="asg",
                     DesiredCapacity=3)
    assert error["Code"] == "ValidationError" and "above max" in error["Message"]
    error = error_of(autoscaling.create_or_update_tags, Tags=[
        {"ResourceId": "asg", "ResourceType": "auto-scaling-group", "Key": "aws:x", "Value": "1",
         "PropagateAtLaunch": False}])
    assert error["Code"] == "ValidationError"
    autoscaling.update_auto_scaling_group(AutoScalingGroupName="asg", MinSize=2, MaxSize=3,
                                          DesiredCapacity=2)


def test_security_group_description_and_ipv6_ranges(vpc):
    ec2 = boto3.client("ec2")
    error = error_of(ec2.create_security_group, GroupName="long", Description="d" * 256,
                     VpcId=vpc["vpc"])
    assert error["Code"] == "InvalidParameterValue"
    group = ec2.create_security_group(GroupName="ok", Description="d" * 255,
                                      VpcId=vpc["vpc"])["GroupId"]
    error = error_of(ec2.authorize_security_group_ingress, GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "::/0"}]}])
    assert error["Code"] == "InvalidParameterValue" and "Ipv6Ranges" in error["Message"]
    error = error_of(ec2.authorize_security_group_ingress, GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
         "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "r" * 256}]}])
    assert error["Code"] == "InvalidParameterValue"
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
         "Ipv6Ranges": [{"CidrIpv6": "::/0"}], "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
