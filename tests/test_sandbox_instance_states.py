"""The sandbox patch refusing to stop or start a terminated instance, as AWS does."""

import boto3
import pytest
from botocore.exceptions import ClientError


def test_a_terminated_instance_cannot_be_stopped_or_started(clean_sandbox):
    ec2 = boto3.client("ec2", region_name="us-east-1")
    image = ec2.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["al2023-ami-2023.*-x86_64"]}])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    for call in (ec2.stop_instances, ec2.start_instances):
        with pytest.raises(ClientError) as error:
            call(InstanceIds=[instance["InstanceId"]])
        assert error.value.response["Error"]["Code"] == "IncorrectInstanceState"
    state = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])[
        "Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "terminated"


def test_a_running_instance_still_stops_and_starts(clean_sandbox):
    ec2 = boto3.client("ec2", region_name="us-east-1")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance_id = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)[
        "Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[instance_id])
    ec2.start_instances(InstanceIds=[instance_id])
    state = ec2.describe_instances(InstanceIds=[instance_id])[
        "Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state in ("pending", "running")
