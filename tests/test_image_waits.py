"""Every image Kiln waits for is waited for as a bake waits: not found for a moment right after
CopyImage (retried), then pending for as long as a copy takes (sandbox/aws/timing.py)."""

import threading

import pytest

from cloud import stacks
from cloud.errors import KilnError
from cloud.target import connect
from provisioner import images, promote, share
from tests.deploy_helpers import deployer
from tests.image_helpers import bootstrapped, kms_key, make_image

WEST = "us-west-2"


@pytest.fixture
def slow_then_fast(clean_sandbox):
    """New images stay unknown to DescribeImages for 2 s; after 3 s, time runs fast again."""

    def start():
        clean_sandbox.set_time_scale(0.4)
        timer = threading.Timer(3, clean_sandbox.set_time_scale, [0.0005])
        timer.start()
        return timer

    yield start
    clean_sandbox.set_time_scale(None)


def test_copy_to_regions_waits_through_not_found_and_pending(kiln_settings, slow_then_fast):
    aws = bootstrapped(kiln_settings, [WEST])
    image_id = make_image(aws.client("ec2"), stacks.ami_key(aws))
    timer = slow_then_fast()
    copies = share.copy_to_regions(aws, image_id, [WEST], {"kiln:app": "hello-web"})
    timer.join()
    west = aws.client("ec2", WEST)
    assert west.describe_images(ImageIds=[copies[WEST]])["Images"][0]["State"] == "available"


def test_promote_waits_through_not_found_and_pending(kiln_settings, slow_then_fast):
    aws = bootstrapped(kiln_settings)
    make_image(aws.client("ec2"), stacks.ami_key(aws))
    timer = slow_then_fast()
    result = promote.promote(aws, "hello-web", "1.4.2", "prod")
    timer.join()
    (promotion,) = result["promotions"]
    prod = aws.account("prod").client("ec2")
    image = prod.describe_images(ImageIds=[promotion["image_id"]])["Images"][0]
    assert image["State"] == "available"


def test_a_failed_copy_is_made_again_on_rerun(kiln_settings, clean_sandbox):
    aws = bootstrapped(kiln_settings, [WEST])
    image_id = make_image(aws.client("ec2"), stacks.ami_key(aws))
    west_kms = connect(aws.settings, admin=True).client("kms", WEST)
    west_key = stacks.ami_key(aws, WEST).split("/")[-1]
    west_kms.disable_key(KeyId=west_key)  # the copy cannot be encrypted: it ends `failed`
    with pytest.raises(KilnError, match="failed"):
        share.copy_to_regions(aws, image_id, [WEST], {"kiln:app": "hello-web"})
    west_kms.enable_key(KeyId=west_key)
    copies = share.copy_to_regions(aws, image_id, [WEST], {"kiln:app": "hello-web"})
    west = aws.client("ec2", WEST)
    assert west.describe_images(ImageIds=[copies[WEST]])["Images"][0]["State"] == "available"


def test_prune_deletes_snapshots_that_stay_in_use_for_a_moment(kiln_settings, admin_aws,
                                                               clean_sandbox):
    aws = connect(kiln_settings())
    deployer(aws.settings)  # prune looks in every account Kiln manages
    ec2 = admin_aws.client("ec2")
    key = kms_key(admin_aws.client("kms"))
    made = [make_image(ec2, key, version=v) for v in ("1.0.0", "1.1.0")]
    doomed = share.snapshot_ids(ec2.describe_images(ImageIds=[made[0]])["Images"][0])
    clean_sandbox.set_time_scale(0.1)  # snapshots in use for 1 s after DeregisterImage
    try:
        result = images.prune(aws, "hello-web", 1)
    finally:
        clean_sandbox.set_time_scale(None)
    assert [r["image_id"] for r in result["removed"]] == [made[0]]
    assert ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": doomed}])[
        "Snapshots"] == []


def test_bake_instance_launch_waits_for_a_new_instance_profile(aws, admin_aws, clean_sandbox):
    from provisioner import resources
    from tests.image_helpers import base_image

    params = {"ImageId": base_image(aws.client("ec2")), "InstanceType": "t3.small",
              "MinCount": 1, "MaxCount": 1, "IamInstanceProfile": {"Name": "new-bake-profile"}}
    clean_sandbox.set_time_scale(0.3)  # a new profile is unknown to RunInstances for 3 s
    admin_aws.client("iam").create_instance_profile(InstanceProfileName="new-bake-profile")
    try:
        with resources.instance(aws, params) as instance_id:
            assert instance_id.startswith("i-")
    finally:
        clean_sandbox.set_time_scale(None)
