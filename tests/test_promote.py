"""Promotion from the build account to prod, end to end through the sandbox's sharing: in the main
region and in a copy region, each with the keys `invoke bootstrap` made there."""

import json
from types import SimpleNamespace

import pytest

from cloud import stacks
from cloud import tags as kiln_tags
from cloud.errors import KilnError
from cloud.target import connect
from provisioner import promote, record, share
from tests.image_helpers import BUILD_ID, PROD_ID, bootstrapped, make_image

WEST = "us-west-2"


@pytest.fixture
def baked(kiln_settings, clean_sandbox):
    """A 1.4.2 image in the build account in us-east-1 and its copy in us-west-2, after
    `invoke bootstrap` with kiln.bake.copy_regions [us-west-2], as a bake leaves them."""
    aws = bootstrapped(kiln_settings, [WEST])
    ec2 = aws.client("ec2")
    image_id = make_image(ec2, stacks.ami_key(aws), **{"kiln:git-commit": "abc123"})
    tags = kiln_tags.from_list(ec2.describe_images(ImageIds=[image_id])["Images"][0]["Tags"])
    images = {aws.region: image_id, **share.copy_to_regions(aws, image_id, [WEST], tags)}
    record.write(aws.settings, "hello-web", "1.4.2", {"image_id": image_id, "images": images})
    return SimpleNamespace(aws=aws, images=images)


def own_images(prod, region: str) -> list[dict]:
    return prod.client("ec2", region).describe_images(Owners=["self"])["Images"]


def test_promote_gives_prod_its_own_tagged_reencrypted_copy_in_each_region(baked):
    aws = baked.aws
    result = promote.promote(aws, "hello-web", "1.4.2", "prod")

    done = {p["region"]: p for p in result["promotions"]}
    assert set(done) == {"us-east-1", WEST}
    prod = aws.account("prod")
    for region, source in baked.images.items():
        ec2 = prod.client("ec2", region)
        (copy,) = own_images(prod, region)
        assert copy["ImageId"] == done[region]["image_id"] != source
        assert copy["OwnerId"] == PROD_ID
        tags = {t["Key"]: t["Value"] for t in copy["Tags"]}
        assert tags["kiln:promoted-from"] == source and tags["kiln:source-account"] == BUILD_ID
        assert tags["kiln:version"] == "1.4.2" and tags["kiln:git-commit"] == "abc123"
        assert "kiln:copied-from" not in tags  # describes the build account's copy only
        snapshot = ec2.describe_snapshots(SnapshotIds=share.snapshot_ids(copy))["Snapshots"][0]
        # Re-encrypted with prod's key of that region: kiln-prod's here, kiln-keys' there.
        assert snapshot["KmsKeyId"] == stacks.ami_key(prod, region)
        assert snapshot["KmsKeyId"].startswith(f"arn:aws:kms:{region}:{PROD_ID}:key/")
        assert snapshot["OwnerId"] == PROD_ID
        parameter = prod.client("ssm", region).get_parameter(
            Name="/kiln/hello-web/prod/ami")["Parameter"]
        assert parameter["Value"] == copy["ImageId"]
    saved = json.loads(record.path(aws.settings, "hello-web", "1.4.2").read_text())
    assert saved["images"] == baked.images  # the bake's part is kept
    assert [(p["account"], p["region"], p["image_id"]) for p in saved["promotions"]] == \
        [("prod", region, done[region]["image_id"]) for region in ("us-east-1", WEST)]


def test_promoting_again_reuses_the_copies(baked):
    aws = baked.aws
    first = promote.promote(aws, "hello-web", "1.4.2", "prod")["promotions"]
    second = promote.promote(aws, "hello-web", "1.4.2", "prod")["promotions"]
    assert [p["image_id"] for p in first] == [p["image_id"] for p in second]
    prod = aws.account("prod")
    assert [len(own_images(prod, region)) for region in baked.images] == [1, 1]
    saved = record.load(aws.settings, "hello-web", "1.4.2")
    assert len(saved["promotions"]) == 2


def test_promote_without_prods_key_in_a_copy_region_fails_before_copying(baked):
    aws = baked.aws
    prod = connect(aws.settings, admin=True).admin("prod")
    prod.client("cloudformation", WEST).delete_stack(StackName="kiln-keys")
    with pytest.raises(KilnError, match=r"no AMI key for account prod in us-west-2 \(stack "
                                        r"kiln-keys\): run `invoke bootstrap`$"):
        promote.promote(aws, "hello-web", "1.4.2", "prod")
    assert [own_images(prod, region) for region in baked.images] == [[], []]


def test_promote_of_an_unbaked_version_fails_clearly(aws, clean_sandbox):
    with pytest.raises(KilnError, match="no image of hello-web 9.9.9 in account build"):
        promote.promote(aws, "hello-web", "9.9.9", "prod")


def test_promote_to_an_unknown_account_names_the_known_ones(aws, clean_sandbox):
    with pytest.raises(KilnError, match="unknown account 'staging'"):
        promote.promote(aws, "hello-web", "1.4.2", "staging")


def test_ami_promote_task_prints_json(run_invoke, baked):
    result = run_invoke("ami.promote", "--version", "1.4.2", "--to", "prod", "--json",
                        overrides={"bake": {"copy_regions": [WEST]}}, check=True)
    output = json.loads(result.stdout)
    assert [(p["account"], p["region"]) for p in output["promotions"]] == \
        [("prod", "us-east-1"), ("prod", WEST)]
    assert "target: sandbox" in result.stderr and "promote:" in result.stderr
