"""Sharing and copying images, checked from the owner's side and from the other account's."""

from datetime import UTC, datetime

import pytest

from cloud.errors import KilnError
from provisioner import share
from tests.image_helpers import PROD_ID, key_stack, kms_key, make_image


@pytest.fixture
def key(aws, clean_sandbox):
    return kms_key(aws.client("kms"))


def _launch_users(ec2, image_id):
    attribute = ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")
    return attribute["LaunchPermissions"]


def test_share_grants_launch_snapshot_and_key_access(aws, key):
    ec2 = aws.client("ec2")
    image_id = make_image(ec2, key)

    first = share.share_image(aws, image_id, aws.region, ["prod"])
    again = share.share_image(aws, image_id, aws.region, ["prod"])

    assert [(r["account"], r["id"], r["launch_permission"]) for r in first] == \
        [("prod", PROD_ID, True)]
    assert again == first  # idempotent: same grant, no duplicate permissions
    assert _launch_users(ec2, image_id) == [{"UserId": PROD_ID}]
    (snapshot,) = first[0]["snapshots"]
    volume_permission = ec2.describe_snapshot_attribute(
        SnapshotId=snapshot, Attribute="createVolumePermission")["CreateVolumePermissions"]
    assert volume_permission == [{"UserId": PROD_ID}]
    grants = aws.client("kms").list_grants(KeyId=key)["Grants"]
    assert [(g["GrantId"], g["GranteePrincipal"]) for g in grants] == \
        [(first[0]["kms_grant_id"], f"arn:aws:iam::{PROD_ID}:root")]
    assert {"Decrypt", "DescribeKey", "CreateGrant", "ReEncryptFrom"} \
        <= set(grants[0]["Operations"])
    prod = aws.account("prod").client("ec2")
    assert prod.describe_images(ImageIds=[image_id])["Images"][0]["ImageId"] == image_id


def test_share_refuses_the_aws_managed_key(aws, clean_sandbox):
    ec2 = aws.client("ec2")
    image_id = make_image(ec2, None)  # Encrypted without a key: alias/aws/ebs
    with pytest.raises(KilnError, match="AWS managed key alias/aws/ebs .* cannot be shared"):
        share.share_image(aws, image_id, aws.region, ["prod"])
    assert _launch_users(ec2, image_id) == []


def test_share_refuses_an_unknown_account_before_acting(aws, key):
    ec2 = aws.client("ec2")
    image_id = make_image(ec2, key)
    with pytest.raises(KilnError, match="unknown account .staging.: kiln.accounts lists"):
        share.share_image(aws, image_id, aws.region, ["prod", "staging"])
    assert _launch_users(ec2, image_id) == []


def test_share_refuses_a_public_image(aws, key):
    ec2 = aws.client("ec2")
    image_id = make_image(ec2, key)
    ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"}]})
    with pytest.raises(KilnError, match="is public"):
        share.share_image(aws, image_id, aws.region, ["prod"])


def test_copy_to_regions_encrypts_tags_shares_and_deprecates(kiln_settings, clean_sandbox):
    from cloud.target import connect

    aws = connect(kiln_settings(bake={"deprecate_after_days": 30}))
    image_id = make_image(aws.client("ec2"), kms_key(aws.client("kms")))
    west_key = key_stack(aws.client("cloudformation", "us-west-2"), "kiln-build")
    tags = {"kiln:app": "hello-web", "kiln:version": "1.4.2", "kiln:role": "image"}

    copies = share.copy_to_regions(aws, image_id, ["us-west-2", aws.region], tags, share=["prod"])
    assert share.copy_to_regions(aws, image_id, ["us-west-2"], tags) == copies  # reused

    west = aws.client("ec2", "us-west-2")
    (copy,) = west.describe_images(ImageIds=[copies["us-west-2"]])["Images"]
    assert {t["Key"]: t["Value"] for t in copy["Tags"]} == {**tags, "kiln:copied-from": image_id}
    assert copy["DeprecationTime"] > datetime.now(UTC).strftime("%Y-%m-%dT")
    snapshot = west.describe_snapshots(SnapshotIds=share.snapshot_ids(copy))["Snapshots"][0]
    assert snapshot["Encrypted"] and snapshot["KmsKeyId"] == west_key
    assert _launch_users(west, copy["ImageId"]) == [{"UserId": PROD_ID}]
    assert aws.client("kms", "us-west-2").list_grants(KeyId=west_key)["Grants"]


def test_copy_to_a_region_without_the_build_stack_fails_before_copying(aws, key):
    image_id = make_image(aws.client("ec2"), key)
    with pytest.raises(KilnError, match="stack kiln-build not found .* region eu-west-1"):
        share.copy_to_regions(aws, image_id, ["eu-west-1"], {})
    assert aws.client("ec2", "eu-west-1").describe_images(Owners=["self"])["Images"] == []
