"""Bakes that go wrong, against the sandbox: bad input, a failing chef-solo, SSH that never
answers, and AWS throttling, 5xx and eventual consistency injected between boto3 and moto.

Every failure is one `kiln:` line and a non-zero exit, and leaves neither a temporary resource
nor an image behind. chef-solo is the real one, on the sandbox's instances."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.bake_helpers import (
    PROBE,
    bake,
    bootstrapped_sandbox,
    image_count,
    leftovers,
    proxied,
    write_probe_manifest,
)
from tests.faults import FaultProxy
from tests.repo_helpers import make_lock_table, make_repo_bucket

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bake-faults")]


@pytest.fixture(scope="module")
def bake_sandbox(sandbox_box, tmp_path_factory):
    return bootstrapped_sandbox(sandbox_box, tmp_path_factory)


@pytest.fixture
def probe(tmp_path):
    return write_probe_manifest(tmp_path)


def failed_cleanly(result, expected: str, images_before: int) -> str:
    """The last stderr line, after checking the failure left nothing behind."""
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("kiln: ") and expected in line, result.stderr
    assert leftovers(app=PROBE) == {}
    assert image_count() == images_before
    return line


def test_a_bad_version_fails_before_any_step(bake_sandbox, run_invoke, probe):
    before = image_count()
    result = bake(run_invoke, probe, version="not-semver")
    failed_cleanly(result, "--version: 'not-semver' is not a semantic version", before)
    assert "bake: step" not in result.stderr


@pytest.mark.parametrize("extra, overrides, expected", [
    (("--share", "nosuch"), {}, "unknown account 'nosuch': kiln.accounts lists build, prod"),
    ((), {"bake": {"base_ami": {"id": "ami-0123456789abcdef0"}}},
     "kiln.bake.base_ami.id: image ami-0123456789abcdef0 not found in region us-east-1"),
    ((), {"bake": {"base_ami": {"filters": {"name": "no-such-image-*"}}}},
     "no available image matches filters name=no-such-image-* and owners amazon"),
    ((), {"bake": {"subnet": "subnet-0123456789abcdef0"}},
     "kiln.bake.subnet: subnet subnet-0123456789abcdef0 not found in region us-east-1"),
    (("--regions", "eu-west-1"), {},
     "no AMI key for account build in eu-west-1 (stack kiln-keys): run `invoke bootstrap` "
     "with eu-west-1 in kiln.bake.copy_regions"),
    (("--regions", "us-wset-2"), {},
     "--regions / kiln.bake.copy_regions: unknown region 'us-wset-2' (did you mean 'us-west-2'?)"),
], ids=["account", "base-ami-id", "base-ami-filters", "subnet", "copy-region", "region-name"])
def test_bad_input_is_one_line_and_creates_nothing(bake_sandbox, run_invoke, probe, extra,
                                                   overrides, expected):
    before = image_count()
    result = bake(run_invoke, probe, *extra, version="1.0.1", overrides=overrides)
    failed_cleanly(result, expected, before)
    assert "created key pair" not in result.stderr and "package: wrote" not in result.stderr


def test_a_published_version_from_other_files_is_refused(bake_sandbox, run_invoke, probe):
    """The repo has 1.0.2 from the probe manifest; the files change, the version does not."""
    published = run_invoke("publish", "--manifest", probe, "--version", "1.0.2", "--json")
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout)["manifest_digest"]
    (Path(probe).parent / "probe" / "probe.txt").write_text("baked by kiln, edited\n")
    before = image_count()
    result = bake(run_invoke, probe, version="1.0.2")
    failed_cleanly(result, "is already in the repo, built from another manifest or other files",
                   before)
    assert "package: wrote" not in result.stderr  # decided before building anything


def test_a_lost_repository_index_fails_the_bake_before_anything_is_built(
        bake_sandbox, run_invoke, probe, admin_aws):
    """repomd.xml deleted by a bucket writer: the bake's lookup names the lost index instead
    of taking the repository for empty and publishing an index of its one package."""
    suffix = time.time_ns()
    config = {"repo": {"bucket": f"kiln-repo-123456789012-b{suffix}",
                       "lock_table": f"kiln-locks-bake-{suffix}"}}
    make_repo_bucket(admin_aws, config["repo"]["bucket"])
    make_lock_table(admin_aws, config["repo"]["lock_table"])
    run_invoke("publish", "--manifest", probe, "--version", "1.0.5", overrides=config,
               check=True)
    admin_aws.client("s3").delete_object(Bucket=config["repo"]["bucket"],
                                         Key="el9/x86_64/repodata/repomd.xml")
    before = image_count()
    result = bake(run_invoke, probe, version="1.0.6", overrides=config)
    failed_cleanly(result, "repodata/repomd.xml is missing, but Kiln last wrote revision 1, "
                           "1 package(s)", before)
    assert "package: wrote" not in result.stderr


def test_a_failing_smoke_check_fails_chef_and_makes_no_image(bake_sandbox, run_invoke, probe):
    before = image_count()
    check = "echo the app does not answer >&2; false"
    result = bake(run_invoke, probe, "--share", "", version="1.0.2",
                  overrides={"bake": {"smoke_commands": [check], "smoke_retries": 0}})
    failed_cleanly(result, "chef-solo failed", before)
    assert "the app does not answer" in result.stderr
    assert "terminating instance" in result.stderr and "deleted security group" in result.stderr


def test_ssh_never_ready_is_a_bounded_wait(bake_sandbox, run_invoke, probe):
    # The private address of a sandbox instance (in the bake VPC) has nothing listening.
    before = image_count()
    started = time.monotonic()
    result = bake(run_invoke, probe, "--share", "", version="1.0.3",
                  overrides={"bake": {"ssh_interface": "private_ip", "ssh_timeout": 3}})
    line = failed_cleanly(result, "not ready after 3 s", before)
    assert line.startswith("kiln: SSH to i-")
    assert time.monotonic() - started < 60


def test_dry_run_prints_the_plan_and_creates_nothing(bake_sandbox, run_invoke, probe, tmp_path):
    before = image_count()
    result = bake(run_invoke, probe, "--dry-run", version="1.0.4")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["dry_run"] and plan["package"]["action"] == "package and publish"
    assert plan["base_ami"]["name"].startswith("al2023-ami-2023.")
    instance = plan["instance"]
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert instance["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    assert instance["BlockDeviceMappings"][0]["Ebs"]["KmsKeyId"].startswith("arn:aws:kms:")
    assert plan["share"] == ["prod"] and plan["reuse"] is None
    assert plan["chef"]["run_list"] == ["recipe[kiln_app]"] and plan["chef"]["cookbook_paths"] == []
    assert plan["chef"]["cookbook_digest"].startswith("sha256:")
    assert leftovers(app=PROBE) == {} and image_count() == before
    assert not list(tmp_path.glob("dist/*.rpm"))


def test_bake_completes_through_throttling_5xx_and_an_image_not_found_after_create_image(
        bake_sandbox, run_invoke, probe):
    """One bake through both kinds of fault: every fourth AWS request throttled or failed, and
    the first DescribeImages after CreateImage answered NotFound (EC2's eventual consistency)."""
    with FaultProxy(bake_sandbox.endpoint, every=4, not_found_after_create_image=True) as proxy:
        overrides, env = proxied(bake_sandbox, proxy.url)
        result = bake(run_invoke, probe, "--share", "", version="1.0.5", overrides=overrides,
                      env=env)
    assert result.returncode == 0, result.stderr
    kinds = {kind for _, kind in proxy.faults if kind != "not-found"}
    assert kinds == {"throttle", "unavailable", "internal"}, proxy.faults
    assert ("DescribeImages", "not-found") in proxy.faults
    image_id = json.loads(result.stdout)["image_id"]
    assert image_id.startswith("ami-")
    assert f"image {image_id} is available" in result.stderr
    assert leftovers(app=PROBE) == {}
