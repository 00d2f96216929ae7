"""The sandbox patch taking CreateImage's `snapshot` TagSpecification, as AWS does."""

import boto3

from cloud import tags
from tests.image_helpers import available


def test_create_image_tags_its_snapshots_at_creation(clean_sandbox):
    ec2 = boto3.client("ec2", region_name="us-east-1")
    base = ec2.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["al2023-ami-2023.*-x86_64"]}])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1)["Instances"][0]
    image_id = ec2.create_image(
        InstanceId=instance["InstanceId"], Name="tagged-at-creation",
        TagSpecifications=[tags.spec("image", {"role": "image"}),
                           tags.spec("snapshot", {"role": "image-snapshot", "app": "x"})],
    )["ImageId"]
    available(ec2, image_id)
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert tags.from_list(image["Tags"]) == {"role": "image"}
    snapshot_ids = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m]
    assert snapshot_ids
    for snapshot in ec2.describe_snapshots(SnapshotIds=snapshot_ids)["Snapshots"]:
        assert tags.from_list(snapshot["Tags"]) == {"role": "image-snapshot", "app": "x"}
