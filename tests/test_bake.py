"""The bake end to end against the sandbox: moto over HTTP, the sandbox sshd standing in for the
instance, real rpmbuild/createrepo_c/dnf, and the sandbox's chef-solo stand-in (Chef cannot be
installed here) for the happy path."""

from __future__ import annotations

import json

import boto3
import pytest

from cloud import tags as kiln_tags
from tests.bake_helpers import PROBE, bake, bootstrap, images, leftovers, write_probe_manifest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bake")]

NO_SHARE = ("--share", "")


@pytest.fixture
def bootstrapped(clean_sandbox, run_invoke):
    bootstrap(run_invoke)
    return clean_sandbox


@pytest.fixture
def probe_manifest(tmp_path):
    return write_probe_manifest(tmp_path)


def test_bake_end_to_end_then_reuse(bootstrapped, run_invoke, tmp_path, probe_manifest):
    first = bake(run_invoke, probe_manifest, *NO_SHARE)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    image_id = result["image_id"]
    assert result["images"] == {"us-east-1": image_id} and not result["reused"]

    ec2 = boto3.client("ec2")
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert image["State"] == "available"
    assert image["Name"].startswith(f"{PROBE}-1.0.0-1-x86_64-")
    tags = kiln_tags.from_list(image["Tags"])
    assert tags[kiln_tags.ROLE] == "image" and tags[kiln_tags.RUN_ID] == result["run_id"]
    assert tags["kiln:rpm-nevra"] == f"{PROBE}-1.0.0-1.noarch" == result["rpm"]["nevra"]
    assert tags["kiln:rpm-sha256"] == result["rpm"]["sha256"]
    assert tags["kiln:base-ami-id"] == result["base_ami"]["id"]
    assert tags["kiln:cookbook-digest"].startswith("sha256:")
    assert tags["kiln:manifest-digest"] == result["manifest_digest"]
    assert tags["kiln:inputs-digest"] == result["inputs_digest"]
    assert kiln_tags.EXPIRES_AT not in tags  # the image is the product, not a temporary
    snapshots = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m]
    for snapshot in ec2.describe_snapshots(SnapshotIds=snapshots)["Snapshots"]:
        assert kiln_tags.from_list(snapshot["Tags"])["kiln:rpm-sha256"] == result["rpm"]["sha256"]

    record = json.loads((tmp_path / f"dist/release-{PROBE}-1.0.0.json").read_text())
    assert record["image_id"] == image_id and record["rpm"]["path"].endswith(".rpm")
    assert {"package", "launch", "provision", "image", "teardown"} <= set(record["timings"])
    assert 0 < record["api_calls"] <= 25, record["api_calls_by_step"]
    assert leftovers(app=PROBE) == {}

    second = bake(run_invoke, probe_manifest, *NO_SHARE)
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["reused"] and again["image_id"] == image_id
    assert "ec2:RunInstances" not in again["api_calls_by_operation"]
    assert again["rpm"]["action"] == "reused"
    assert len(images(PROBE)) == 1 and leftovers(app=PROBE) == {}
