"""The bake end to end against the sandbox: moto over HTTP, the sandbox sshd standing in for the
instance, real rpmbuild/createrepo_c/dnf, and the sandbox's chef-solo stand-in (Chef cannot be
installed here) for the happy path."""

from __future__ import annotations

import json

import boto3
import pytest

from cloud import tags as kiln_tags
from tests.bake_helpers import bootstrap, images, leftovers

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bake")]

APP = "hello-web"
PROD = "222222222222"


@pytest.fixture
def bootstrapped(clean_sandbox, run_invoke):
    bootstrap(run_invoke)
    return clean_sandbox


def test_bake_end_to_end_then_reuse(bootstrapped, run_invoke, tmp_path):
    # The default manifest (kiln.manifest, the example app), one region, shared with prod.
    first = run_invoke("bake", "--version", "1.0.0", "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    image_id = result["image_id"]
    assert result["images"] == {"us-east-1": image_id} and not result["reused"]

    ec2 = boto3.client("ec2")
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert image["State"] == "available"
    assert image["Name"].startswith(f"{APP}-1.0.0-1-x86_64-")
    tags = kiln_tags.from_list(image["Tags"])
    assert tags[kiln_tags.ROLE] == "image" and tags[kiln_tags.RUN_ID] == result["run_id"]
    assert tags["kiln:rpm-nevra"] == f"{APP}-1.0.0-1.noarch" == result["rpm"]["nevra"]
    assert tags["kiln:rpm-sha256"] == result["rpm"]["sha256"]
    assert tags["kiln:base-ami-id"] == result["base_ami"]["id"]
    assert tags["kiln:base-ami-name"] == result["base_ami"]["name"]
    assert tags["kiln:git-commit"] == result["commit"]
    assert tags["kiln:cookbook-digest"].startswith("sha256:")
    assert tags["kiln:manifest-digest"] == result["manifest_digest"]
    assert tags["kiln:inputs-digest"] == result["inputs_digest"]
    assert kiln_tags.EXPIRES_AT not in tags  # the image is the product, not a temporary
    snapshots = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m]
    for snapshot in ec2.describe_snapshots(SnapshotIds=snapshots)["Snapshots"]:
        assert kiln_tags.from_list(snapshot["Tags"])["kiln:rpm-sha256"] == result["rpm"]["sha256"]
    # Shared with prod, checked from the owner's side.
    launch = ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")
    assert launch["LaunchPermissions"] == [{"UserId": PROD}]
    assert [(s["account"], s["id"]) for s in result["shares"]] == [("prod", PROD)]

    record = json.loads((tmp_path / f"dist/release-{APP}-1.0.0-1.json").read_text())
    assert record["image_id"] == image_id and record["rpm"]["path"].endswith(".rpm")
    assert {"package", "launch", "provision", "image", "teardown", "share"} <= set(
        record["timings"])
    # The lease of one bake per version (taken, renewed every 20 s, released) comes on top; the
    # waits poll while the instance and the image are pending, as on AWS (sandbox timing).
    lease = sum(n for operation, n in record["api_calls_by_operation"].items()
                if operation.startswith("dynamodb:"))
    # Polls of pending states depend on how long AWS takes, not on the bake: counted apart.
    polls = sum(n for operation, n in record["api_calls_by_operation"].items()
                if operation in ("ec2:DescribeImages", "ec2:DescribeInstances"))
    assert 0 < record["api_calls"] - lease - polls <= 25, record["api_calls_by_operation"]
    assert leftovers(app=APP) == {}

    # Packaging settings that would change the RPM's bytes do not matter: the repo already has
    # 1.0.0 built from the same manifest and files, so nothing is rebuilt or republished.
    second = run_invoke("bake", "--version", "1.0.0", "--json",
                        overrides={"package": {"compression": "gzip"}})
    assert second.returncode == 0, second.stderr
    assert "package: wrote" not in second.stderr
    again = json.loads(second.stdout)
    assert again["rpm"]["sha256"] == result["rpm"]["sha256"]
    assert again["reused"] and again["image_id"] == image_id
    assert "ec2:RunInstances" not in again["api_calls_by_operation"]
    assert again["rpm"]["action"] == "reused" and again["shares"]
    assert len(images(APP)) == 1 and leftovers(app=APP) == {}

    # Whoever can write the bucket replaces the package and copies its S3 metadata: the bake
    # judges the object's bytes against the signed metadata, not what the object says of itself.
    s3 = boto3.client("s3")
    bucket = next(b["Name"] for b in s3.list_buckets()["Buckets"]
                  if b["Name"].startswith("kiln-repo-"))
    key = f"el9/x86_64/Packages/{again['rpm']['nevra']}.rpm"
    held = s3.get_object(Bucket=bucket, Key=key)
    s3.put_object(Bucket=bucket, Key=key, Body=held["Body"].read() + b"\0",
                  Metadata=held["Metadata"])
    third = run_invoke("bake", "--version", "1.0.0", "--json")
    assert third.returncode != 0
    assert "is not the" in third.stderr and "the object was replaced" in third.stderr
    assert len(images(APP)) == 1 and leftovers(app=APP) == {}
