"""Sharing and copying images, checked from the owner's side and from the other account's."""

from datetime import UTC, datetime

import pytest

from cloud import stacks
from cloud.errors import KilnError
from provisioner import share
from tests.image_helpers import PROD_ID, bootstrapped, kms_key, make_image


@pytest.fixture
def key(admin_aws, clean_sandbox):
    return kms_key(admin_aws.client("kms"))


def _launch_users(ec2, image_id):
    attribute = ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")
    return attribute["LaunchPermissions"]


def test_share_grants_launch_snapshot_and_key_access(aws, admin_aws, key):
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
    assert {"Decrypt", "DescribeKey", "ReEncryptFrom"} <= set(grants[0]["Operations"])
    assert "CreateGrant" not in grants[0]["Operations"]  # not passed on by prod
    prod = admin_aws.admin("prod").client("ec2")
    assert prod.describe_images(ImageIds=[image_id])["Images"][0]["ImageId"] == image_id


def test_grants_go_when_an_account_is_no_longer_shared_with(aws, key):
    image_id = make_image(aws.client("ec2"), key)
    share.share_image(aws, image_id, aws.region, ["prod"])
    kms = aws.client("kms")
    assert share.retire_for_image(aws, image_id, aws.region, ["prod"]) == []
    assert len(kms.list_grants(KeyId=key)["Grants"]) == 1
    assert share.retire_for_image(aws, image_id, aws.region, []) == [PROD_ID]
    assert kms.list_grants(KeyId=key)["Grants"] == []


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
    aws = bootstrapped(kiln_settings, ["us-west-2"], deprecate_after_days=30)
    image_id = make_image(aws.client("ec2"), stacks.ami_key(aws))
    west_key = stacks.ami_key(aws, "us-west-2")  # the build account's kiln-keys in us-west-2
    assert west_key.startswith("arn:aws:kms:us-west-2:123456789012:key/")
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
    grants = aws.client("kms", "us-west-2").list_grants(KeyId=west_key)["Grants"]
    assert [g["GranteePrincipal"] for g in grants] == [f"arn:aws:iam::{PROD_ID}:root"]
    # The key's own policy lets prod use it too (the bootstrap's, not just the grant).
    policy = aws.client("kms", "us-west-2").get_key_policy(KeyId=west_key, PolicyName="default")
    assert f"arn:aws:iam::{PROD_ID}:root" in policy["Policy"]


def test_copy_to_a_region_without_its_key_stack_fails_before_copying(aws, key):
    image_id = make_image(aws.client("ec2"), key)
    with pytest.raises(KilnError, match=r"no AMI key for account build in eu-west-1 \(stack "
                                        r"kiln-keys\): run `invoke bootstrap` with eu-west-1 in "
                                        r"kiln.bake.copy_regions"):
        share.copy_to_regions(aws, image_id, ["eu-west-1"], {})
    assert aws.client("ec2", "eu-west-1").describe_images(Owners=["self"])["Images"] == []

