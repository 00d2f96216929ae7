"""Promotion from the build account to prod, end to end through the sandbox's sharing."""

import json

import pytest

from cloud.errors import KilnError
from provisioner import promote, record, share
from tests.image_helpers import BUILD_ID, PROD_ID, key_stack, kms_key, make_image


@pytest.fixture
def baked(aws, clean_sandbox):
    """A 1.4.2 image in the build account and prod's bootstrap key, as after bake + bootstrap."""
    image_id = make_image(aws.client("ec2"), kms_key(aws.client("kms")), **{"kiln:git-commit":
                                                                             "abc123"})
    record.write(aws.settings, "hello-web", "1.4.2", {"image_id": image_id})
    prod_key = key_stack(aws.account("prod").client("cloudformation"), "kiln-prod")
    return image_id, prod_key


def test_promote_gives_prod_its_own_tagged_reencrypted_copy(aws, baked):
    source, prod_key = baked
    result = promote.promote(aws, "hello-web", "1.4.2", "prod")

    (done,) = result["promotions"]
    prod = aws.account("prod")
    ec2 = prod.client("ec2")
    (copy,) = ec2.describe_images(Owners=["self"])["Images"]
    assert copy["ImageId"] == done["image_id"] != source and copy["OwnerId"] == PROD_ID
    tags = {t["Key"]: t["Value"] for t in copy["Tags"]}
    assert tags["kiln:promoted-from"] == source and tags["kiln:source-account"] == BUILD_ID
    assert tags["kiln:version"] == "1.4.2" and tags["kiln:git-commit"] == "abc123"
    snapshot = ec2.describe_snapshots(SnapshotIds=share.snapshot_ids(copy))["Snapshots"][0]
    assert snapshot["KmsKeyId"] == prod_key and snapshot["OwnerId"] == PROD_ID
    parameter = prod.client("ssm").get_parameter(Name="/kiln/hello-web/prod/ami")["Parameter"]
    assert parameter["Value"] == copy["ImageId"]
    saved = json.loads(record.path(aws.settings, "hello-web", "1.4.2").read_text())
    assert saved["image_id"] == source  # the bake's part is kept
    assert [(p["account"], p["region"], p["image_id"]) for p in saved["promotions"]] == \
        [("prod", "us-east-1", copy["ImageId"])]


def test_promoting_again_reuses_the_copy(aws, baked):
    first = promote.promote(aws, "hello-web", "1.4.2", "prod")["promotions"][0]["image_id"]
    second = promote.promote(aws, "hello-web", "1.4.2", "prod")["promotions"][0]["image_id"]
    assert first == second
    assert len(aws.account("prod").client("ec2").describe_images(Owners=["self"])["Images"]) == 1
    saved = record.load(aws.settings, "hello-web", "1.4.2")
    assert len(saved["promotions"]) == 1


def test_promote_of_an_unbaked_version_fails_clearly(aws, baked):
    with pytest.raises(KilnError, match="no image of hello-web 9.9.9 in account build"):
        promote.promote(aws, "hello-web", "9.9.9", "prod")


def test_promote_to_an_unknown_account_names_the_known_ones(aws, baked):
    with pytest.raises(KilnError, match="unknown account 'staging'"):
        promote.promote(aws, "hello-web", "1.4.2", "staging")


def test_ami_promote_task_prints_json(run_invoke, aws, baked):
    result = run_invoke("ami.promote", "--version", "1.4.2", "--to", "prod", "--json",
                        check=True)
    output = json.loads(result.stdout)
    assert output["promotions"][0]["account"] == "prod"
    assert "target: sandbox" in result.stderr and "promote:" in result.stderr
