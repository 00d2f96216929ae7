"""The sandbox's shared_images and image_deprecation patches, checked through plain boto3."""

from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.image_helpers import BUILD_ID, PROD_ID, available, kms_key, make_image

REGION = "us-east-1"


@pytest.fixture
def build(clean_sandbox):
    return boto3.Session(region_name=REGION)


@pytest.fixture
def prod(build):
    creds = build.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{PROD_ID}:role/OrganizationAccountAccessRole",
        RoleSessionName="test")["Credentials"]
    session = boto3.Session(aws_access_key_id=creds["AccessKeyId"],
                            aws_secret_access_key=creds["SecretAccessKey"],
                            aws_session_token=creds["SessionToken"], region_name=REGION)
    assert session.client("sts").get_caller_identity()["Account"] == PROD_ID
    return session


@pytest.fixture
def image(build):
    key = kms_key(build.client("kms"))
    return make_image(build.client("ec2"), key), key


def _snapshot(ec2, image_id):
    mapping = ec2.describe_images(ImageIds=[image_id])["Images"][0]["BlockDeviceMappings"][0]
    return mapping["Ebs"], ec2.describe_snapshots(SnapshotIds=[mapping["Ebs"]["SnapshotId"]])[
        "Snapshots"][0]


def test_create_image_keeps_the_volume_encryption(build, image):
    image_id, key = image
    ebs, snapshot = _snapshot(build.client("ec2"), image_id)
    assert ebs["Encrypted"] is True
    assert snapshot["Encrypted"] is True and snapshot["KmsKeyId"] == key


def test_shared_image_is_visible_to_the_other_account_without_tags(build, prod, image):
    image_id, _ = image
    theirs = prod.client("ec2")
    with pytest.raises(ClientError, match="InvalidAMIID.NotFound"):
        theirs.describe_images(ImageIds=[image_id])
    assert theirs.describe_images(Owners=[BUILD_ID])["Images"] == []

    build.client("ec2").modify_image_attribute(
        ImageId=image_id, LaunchPermission={"Add": [{"UserId": PROD_ID}]})

    seen = theirs.describe_images(ImageIds=[image_id])["Images"][0]
    assert seen["OwnerId"] == BUILD_ID and not seen.get("Tags")
    assert image_id in [i["ImageId"] for i in
                        theirs.describe_images(ExecutableUsers=["self"])["Images"]]
    assert [i["ImageId"] for i in theirs.describe_images(Owners=[BUILD_ID])["Images"]] \
        == [image_id]
    assert theirs.describe_images(Owners=["self"])["Images"] == []
    filtered = theirs.describe_images(
        Owners=[BUILD_ID], Filters=[{"Name": "tag:kiln:app", "Values": ["hello-web"]}])
    assert filtered["Images"] == []  # the owner's tags do not cross accounts


def test_copy_of_a_shared_image_needs_snapshot_and_key_access(build, prod, image):
    image_id, key = image
    ec2 = build.client("ec2")
    ebs, _ = _snapshot(ec2, image_id)
    ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"UserId": PROD_ID}]})
    theirs = prod.client("ec2")
    prod_key = kms_key(prod.client("kms"), "prod key")

    def copy():
        return theirs.copy_image(
            SourceImageId=image_id, SourceRegion=REGION, Name="copy", Encrypted=True,
            KmsKeyId=prod_key, TagSpecifications=[
                {"ResourceType": "image", "Tags": [{"Key": "kiln:app", "Value": "hello-web"}]}],
        )["ImageId"]

    with pytest.raises(ClientError, match="createVolumePermission"):
        copy()
    ec2.modify_snapshot_attribute(SnapshotId=ebs["SnapshotId"], Attribute="createVolumePermission",
                                  OperationType="add", UserIds=[PROD_ID])
    with pytest.raises(ClientError, match="cannot use KMS key"):
        copy()
    build.client("kms").create_grant(KeyId=key, GranteePrincipal=f"arn:aws:iam::{PROD_ID}:root",
                                     Operations=["Decrypt", "DescribeKey", "ReEncryptFrom"])
    copied = copy()
    available(theirs, copied)

    mine = theirs.describe_images(Owners=["self"])["Images"]
    assert [(i["ImageId"], i["OwnerId"]) for i in mine] == [(copied, PROD_ID)]
    assert mine[0]["Tags"] == [{"Key": "kiln:app", "Value": "hello-web"}]
    _, snapshot = _snapshot(theirs, copied)
    assert snapshot["Encrypted"] is True and snapshot["KmsKeyId"] == prod_key


def test_copy_across_regions_uses_the_given_key(build, image):
    image_id, _ = image
    west = build.client("ec2", region_name="us-west-2")
    west_key = kms_key(build.client("kms", region_name="us-west-2"))
    copied = west.copy_image(SourceImageId=image_id, SourceRegion=REGION, Name="copy",
                             Encrypted=True, KmsKeyId=west_key)["ImageId"]
    available(west, copied)
    _, snapshot = _snapshot(west, copied)
    assert snapshot["KmsKeyId"] == west_key


def test_deprecation_time_is_set_rounded_and_cleared(build, image):
    image_id, _ = image
    ec2 = build.client("ec2")
    ec2.enable_image_deprecation(ImageId=image_id,
                                 DeprecateAt=datetime(2031, 5, 4, 3, 2, 1, tzinfo=UTC))
    shown = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert shown["DeprecationTime"] == "2031-05-04T03:03:00.000Z"
    ec2.disable_image_deprecation(ImageId=image_id)
    assert "DeprecationTime" not in ec2.describe_images(ImageIds=[image_id])["Images"][0]


def test_default_ebs_key_is_aws_managed(build):
    make_image(build.client("ec2"), None)
    key = build.client("kms").describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]
    assert key["KeyManager"] == "AWS"
