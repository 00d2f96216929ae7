"""sandbox/aws/timing.py: AWS's pending states and eventual consistency, time-scaled."""

import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.deploy_helpers import register_image


class Clock:
    """Calling it lets every pending moment pass; `scale(f)` slows time down again."""

    def __init__(self, box):
        self.scale = box.set_time_scale

    def __call__(self):
        self.scale(0.000001)  # the longest, a copy (600 s), passes in 0.6 ms


@pytest.fixture
def slow(clean_sandbox):
    """A sandbox whose AWS durations are long enough to watch; `slow()` lets them pass."""
    clean_sandbox.set_time_scale(0.2)  # an image visible after 1 s, pending for a minute
    yield Clock(clean_sandbox)
    clean_sandbox.set_time_scale(None)


def base_image(ec2) -> str:
    return ec2.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["al2023-ami-2023.*-x86_64"]}])["Images"][0]["ImageId"]


def instance_state(ec2, instance_id) -> str:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0][
        "Instances"][0]["State"]["Name"]


def image_state(ec2, image_id) -> str:
    return ec2.describe_images(ImageIds=[image_id])["Images"][0]["State"]


def test_instances_start_pending_then_run(slow):
    ec2 = boto3.client("ec2")
    launched = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1)["Instances"][0]
    assert launched["State"]["Name"] == "pending"
    assert instance_state(ec2, launched["InstanceId"]) == "pending"
    slow()
    assert instance_state(ec2, launched["InstanceId"]) == "running"


def test_new_image_is_not_found_then_pending_then_available(slow):
    ec2 = boto3.client("ec2")
    instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1)[
        "Instances"][0]["InstanceId"]
    image = ec2.create_image(InstanceId=instance, Name="timed")["ImageId"]
    with pytest.raises(ClientError) as error:
        ec2.describe_images(ImageIds=[image])
    assert error.value.response["Error"]["Code"] == "InvalidAMIID.NotFound"
    assert image not in [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]]
    time.sleep(1.2)
    found = ec2.describe_images(ImageIds=[image])["Images"][0]
    assert found["State"] == "pending"
    snapshot = found["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    assert ec2.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"][0]["State"] == "pending"
    slow()
    assert image_state(ec2, image) == "available"
    assert ec2.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"][0]["State"] == "completed"


def test_copy_honours_client_token_and_fails_when_its_key_is_disabled(slow):
    ec2, kms = boto3.client("ec2"), boto3.client("kms")
    source = register_image(ec2, "copy-source")
    meta = kms.create_key()["KeyMetadata"]
    key, key_id = meta["Arn"], meta["KeyId"]
    params = {"SourceImageId": source, "SourceRegion": "us-east-1", "Name": "copy",
              "Encrypted": True, "KmsKeyId": key, "ClientToken": "token-1"}
    first = ec2.copy_image(**params)["ImageId"]
    assert ec2.copy_image(**params)["ImageId"] == first
    kms.disable_key(KeyId=key_id)
    slow()
    assert image_state(ec2, first) == "failed"
    assert ec2.copy_image(**params)["ImageId"] == first  # the same token: the failed copy
    kms.enable_key(KeyId=key_id)
    second = ec2.copy_image(**{**params, "ClientToken": "token-2"})["ImageId"]
    ec2.get_waiter("image_available").wait(ImageIds=[second],
                                           WaiterConfig={"Delay": 0.05, "MaxAttempts": 100})
    assert second != first


def test_auto_scaling_instances_pending_and_targets_initial(slow):
    ec2, elbv2 = boto3.client("ec2"), boto3.client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24",
                               AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    balancer = elbv2.create_load_balancer(Name="lb", Subnets=[subnet])["LoadBalancers"][0]
    tg = elbv2.create_target_group(Name="tg", Protocol="HTTP", Port=80, VpcId=vpc,
                                   HealthCheckIntervalSeconds=10, HealthyThresholdCount=2)[
        "TargetGroups"][0]["TargetGroupArn"]
    elbv2.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=80,
                          DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
    ec2.create_launch_template(LaunchTemplateName="lt-timed", LaunchTemplateData={
        "ImageId": base_image(ec2), "InstanceType": "t3.micro"})
    autoscaling = boto3.client("autoscaling")
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="asg", LaunchTemplate={"LaunchTemplateName": "lt-timed"}, MinSize=1,
        MaxSize=1, DesiredCapacity=1, VPCZoneIdentifier=subnet, TargetGroupARNs=[tg])

    def lifecycle():
        return [i["LifecycleState"] for i in autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=["asg"])["AutoScalingGroups"][0]["Instances"]]

    def health():
        return [d["TargetHealth"]["State"] for d in elbv2.describe_target_health(
            TargetGroupArn=tg)["TargetHealthDescriptions"]]

    assert lifecycle() == ["Pending"]
    assert health() == ["initial"]
    slow()
    assert lifecycle() == ["InService"]
    assert health() == ["healthy"]


def test_snapshots_stay_in_use_for_a_moment_after_deregister(slow):
    ec2 = boto3.client("ec2")
    instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1)[
        "Instances"][0]["InstanceId"]
    image = ec2.create_image(InstanceId=instance, Name="released")["ImageId"]
    slow()
    snapshot = ec2.describe_images(ImageIds=[image])["Images"][0]["BlockDeviceMappings"][0][
        "Ebs"]["SnapshotId"]
    slow.scale(0.2)
    ec2.deregister_image(ImageId=image)
    with pytest.raises(ClientError) as error:
        ec2.delete_snapshot(SnapshotId=snapshot)
    assert error.value.response["Error"]["Code"] == "InvalidSnapshot.InUse"
    slow()
    ec2.delete_snapshot(SnapshotId=snapshot)


def test_a_new_instance_profile_is_not_usable_at_once(slow):
    iam, ec2 = boto3.client("iam"), boto3.client("ec2")
    params = {"ImageId": base_image(ec2), "MinCount": 1, "MaxCount": 1,
              "IamInstanceProfile": {"Name": "fresh"}}
    iam.create_instance_profile(InstanceProfileName="fresh")
    error = error_of(ec2.run_instances, **params)
    assert error["Code"] == "InvalidParameterValue" and "Invalid IAM Instance Profile" in \
        error["Message"]
    missing = error_of(ec2.run_instances, **{**params, "IamInstanceProfile": {"Name": "none"}})
    assert missing["Code"] == "InvalidParameterValue"
    slow()
    assert ec2.run_instances(**params)["Instances"][0]["IamInstanceProfile"]["Arn"].endswith(
        "/fresh")


def error_of(call, **params) -> dict:
    with pytest.raises(ClientError) as raised:
        call(**params)
    return raised.value.response["Error"]


def test_targets_leave_initial_once_under_concurrent_describes(slow):
    """Many callers ask at the moment the health checks pass (a deploy's wait and a watcher);
    every one of them gets an answer, none an Internal Server Error."""
    ec2, elbv2 = boto3.client("ec2"), boto3.client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    tg = elbv2.create_target_group(Name="ips", Protocol="HTTP", Port=80, VpcId=vpc,
                                   TargetType="ip", HealthCheckIntervalSeconds=5,
                                   HealthyThresholdCount=2)["TargetGroups"][0]["TargetGroupArn"]
    targets = [{"Id": f"10.8.{n // 250}.{n % 250 + 1}"} for n in range(300)]

    def describe(_):
        return len(elbv2.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"])

    for _round in range(3):
        slow.scale(0.2)
        elbv2.register_targets(TargetGroupArn=tg, Targets=targets)
        slow()
        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(describe, range(16))) == [300] * 16
        elbv2.deregister_targets(TargetGroupArn=tg, Targets=targets)
