"""Server group instances are reached through the load balancer only: no public IP."""

import boto3

from orchestrator import operations
from tests.deploy_helpers import asg_instances, make_image, register_image


def test_server_group_instances_have_no_public_ip(kaws, daws, outputs):
    make_image(daws, "1.0.0")
    operations.deploy(kaws, version="1.0.0")
    ids = asg_instances(daws, "hello-web-v001")
    found = [i for r in daws.client("ec2").describe_instances(InstanceIds=ids)["Reservations"]
             for i in r["Instances"]]
    assert len(found) == 2
    for instance in found:
        assert "PublicIpAddress" not in instance
        assert [g["GroupId"] for g in instance["SecurityGroups"]] == [
            outputs["InstanceSecurityGroupId"]]


def test_launch_template_network_interface_decides_the_public_ip(clean_sandbox):
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.6.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.6.1.0/24")["Subnet"]["SubnetId"]
    ec2.modify_subnet_attribute(SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
    group = ec2.create_security_group(GroupName="app", Description="app", VpcId=vpc)["GroupId"]
    image = register_image(ec2, "network-test")
    for name, public in (("private", False), ("public", True)):
        ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
            "ImageId": image, "NetworkInterfaces": [
                {"DeviceIndex": 0, "AssociatePublicIpAddress": public, "Groups": [group]}]})
    autoscaling = boto3.client("autoscaling")
    for name in ("private", "public"):
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateName": name},
            MinSize=1, MaxSize=1, DesiredCapacity=1, VPCZoneIdentifier=subnet)
    by_group = {}
    for reservation in ec2.describe_instances()["Reservations"]:
        for instance in reservation["Instances"]:
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            by_group[tags["aws:autoscaling:groupName"]] = instance
    assert "PublicIpAddress" not in by_group["private"]
    assert "PublicIpAddress" in by_group["public"]
    assert [g["GroupId"] for g in by_group["private"]["SecurityGroups"]] == [group]
