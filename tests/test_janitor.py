"""The janitor against leftovers made the way a killed bake leaves them."""

import json
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from cloud import locks, sweepers
from cloud import tags as kiln_tags
from cloud.target import connect
from provisioner import janitor
from tests.conftest import ROOT
from tests.deploy_helpers import deployer
from tests.image_helpers import base_image, kms_key, make_image
from tests.repo_helpers import make_lock_table

# A bake's lease, held by a process of its own until it is killed.
HOLD_BAKE_LEASE = """\
import sys, time
from cloud import locks, settings, target
from tests.conftest import deep_merge, project_config
raw = deep_merge(project_config(), {"sandbox": {"state_dir": sys.argv[1]},
                                    "repo": {"lock_table": sys.argv[2]}})
aws = target.connect(settings.validate(raw, ["test"]))
with locks.lease(aws, sys.argv[2], locks.bake_key("hello-web", sys.argv[3]),
                 locks.owner_description(sys.argv[4])):
    print("held", flush=True)
    time.sleep(600)
"""

PAST = "2020-01-01T00:00:00Z"


def _admin(aws):
    """The administrator's session in the same account: leftovers are planted as a killed bake
    left them, not made with the rights of the janitor under test."""
    return connect(aws.settings, admin=True).admin(aws.account_name)


def _leftovers(aws, run_id, expires_at, region=None, version="1.4.2"):
    """A key pair, security group, instance and spare volume of one bake run."""
    ec2 = _admin(aws).client("ec2", region)

    def tags(role):
        return kiln_tags.kiln_tags("hello-web", role, run_id=run_id, version=version,
                                   **{kiln_tags.EXPIRES_AT: expires_at})

    key = ec2.create_key_pair(KeyName=f"kiln-{run_id}", TagSpecifications=[
        kiln_tags.spec("key-pair", tags("bake-key"))])["KeyName"]
    group = ec2.create_security_group(GroupName=f"kiln-{run_id}", Description="bake",
                                      TagSpecifications=[kiln_tags.spec("security-group",
                                                                        tags("bake-sg"))])
    instance = ec2.run_instances(
        ImageId=base_image(ec2), MinCount=1, MaxCount=1, KeyName=f"kiln-{run_id}",
        SecurityGroupIds=[group["GroupId"]],
        TagSpecifications=[kiln_tags.spec("instance", tags("bake-instance"))],
    )["Instances"][0]["InstanceId"]
    volume = ec2.create_volume(Size=1, AvailabilityZone=f"{ec2.meta.region_name}a",
                               TagSpecifications=[kiln_tags.spec("volume", tags("bake-volume"))])
    return {"key-pair": key, "security-group": group["GroupId"], "instance": instance,
            "volume": volume["VolumeId"]}


def _alive(aws, ids, region=None):
    ec2 = aws.client("ec2", region)
    state = ec2.describe_instances(InstanceIds=[ids["instance"]])["Reservations"][0][
        "Instances"][0]["State"]["Name"]
    return {
        "instance": state != "terminated",
        "key-pair": bool(ec2.describe_key_pairs(Filters=[
            {"Name": "key-name", "Values": [ids["key-pair"]]}])["KeyPairs"]),
        "security-group": bool(ec2.describe_security_groups(Filters=[
            {"Name": "group-id", "Values": [ids["security-group"]]}])["SecurityGroups"]),
        "volume": bool(ec2.describe_volumes(Filters=[
            {"Name": "volume-id", "Values": [ids["volume"]]}])["Volumes"]),
    }


@pytest.fixture
def aws(kiln_settings, clean_sandbox):
    """The operator, after `invoke bootstrap` made prod's deployer role: the janitor looks in
    every account Kiln manages."""
    settings = kiln_settings()
    deployer(settings)
    return connect(settings)


@pytest.fixture
def left(aws, clean_sandbox):
    expired = _leftovers(aws, "20200101T000000-dead01", PAST)
    live = _leftovers(aws, "20990101T000000-live01", kiln_tags.expires_at(60))
    return expired, live


def test_dry_run_lists_expired_leftovers_and_removes_nothing(aws, left):
    expired, live = left
    result = janitor.run(aws, dry_run=True)
    found = {(item["kind"], item["id"]) for item in result["leftovers"]}
    assert found == {(kind, id_) for kind, id_ in expired.items()}
    assert all(_alive(aws, expired).values())


def test_janitor_removes_expired_leftovers_and_leaves_live_ones(aws, left):
    expired, live = left
    result = janitor.run(aws)
    assert len(result["leftovers"]) == 4
    assert not any(_alive(aws, expired).values())
    assert all(_alive(aws, live).values())
    assert janitor.run(aws)["leftovers"] == []  # nothing left to do


def test_resources_of_a_finished_run_are_leftovers_before_expiry(aws, clean_sandbox):
    run_id = "20250101T000000-done01"
    ids = _leftovers(aws, run_id, kiln_tags.expires_at(60))
    admin = _admin(aws)
    make_image(admin.client("ec2"), kms_key(admin.client("kms")), run_id=run_id)
    result = janitor.run(aws)
    assert {i["reason"] for i in result["leftovers"]} == {f"run {run_id} finished (its image "
                                                          f"exists)"}
    assert not any(_alive(aws, ids).values())


def test_orphan_snapshots_of_deregistered_images_are_removed(aws, clean_sandbox):
    ec2 = _admin(aws).client("ec2")
    key = kms_key(_admin(aws).client("kms"))
    gone, kept = make_image(ec2, key), make_image(ec2, key, version="1.4.3")
    snapshots = {}
    for image_id in (gone, kept):
        (mapping,) = ec2.describe_images(ImageIds=[image_id])["Images"][0]["BlockDeviceMappings"]
        snapshots[image_id] = mapping["Ebs"]["SnapshotId"]
        ec2.create_tags(Resources=[snapshots[image_id]], Tags=kiln_tags.to_list(
            kiln_tags.kiln_tags("hello-web", "image-snapshot")))
    ec2.deregister_image(ImageId=gone)  # as a careless hand would, leaving the snapshot

    result = janitor.run(aws)
    assert [(i["kind"], i["id"]) for i in result["leftovers"]] == [("snapshot", snapshots[gone])]
    remaining = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert snapshots[kept] in remaining and snapshots[gone] not in remaining


def test_an_orphan_snapshot_still_in_use_right_after_deregister_is_waited_for(
        aws, clean_sandbox):
    """As on EC2, a snapshot is in use for a moment after DeregisterImage (a hand or another tool
    deregistered its image just before): the janitor retries InvalidSnapshot.InUse."""
    deployer(aws.settings)  # the janitor sweeps prod too
    admin = _admin(aws)
    ec2 = admin.client("ec2")
    image = make_image(ec2, kms_key(admin.client("kms")))
    (mapping,) = ec2.describe_images(ImageIds=[image])["Images"][0]["BlockDeviceMappings"]
    snapshot = mapping["Ebs"]["SnapshotId"]
    ec2.create_tags(Resources=[snapshot], Tags=kiln_tags.to_list(
        kiln_tags.kiln_tags("hello-web", "image-snapshot")))
    clean_sandbox.set_time_scale(0.5)  # in use for 5 s after DeregisterImage
    try:
        ec2.deregister_image(ImageId=image)
        result = janitor.run(aws)
    finally:
        clean_sandbox.set_time_scale(None)
    assert result["failures"] == []
    assert ("snapshot", snapshot) in [(i["kind"], i["id"]) for i in result["leftovers"]]
    assert ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": [snapshot]}])[
        "Snapshots"] == []


def test_leftovers_in_the_prod_account_are_found_too(aws, clean_sandbox):
    prod = aws.account("prod")
    ids = _leftovers(prod, "20200101T000000-prod01", PAST)
    result = janitor.run(aws, dry_run=True)
    assert {(i["account"], i["id"]) for i in result["leftovers"]} == \
        {("prod", id_) for id_ in ids.values()}


def test_extra_sweepers_join_the_run(aws, clean_sandbox, monkeypatch):
    removed = []
    sweeper = sweepers.Sweeper(
        "environment", 5,
        find=lambda place, region, why: [sweepers.Leftover(
            "environment", "hello-web-pr-7", place.account_name, region,
            why({kiln_tags.EXPIRES_AT: PAST}))] if place.account_name == "prod" else [],
        remove=lambda place, region, items: removed.extend(i.id for i in items))
    monkeypatch.setattr(sweepers, "SWEEPERS", list(sweepers.SWEEPERS))
    sweepers.register(sweeper)
    janitor.run(aws, now=datetime.now(UTC))
    assert removed == ["hello-web-pr-7"]


def test_janitor_task_dry_run_prints_json(run_invoke, aws, clean_sandbox):
    ids = _leftovers(aws, "20200101T000000-cli001", PAST)
    result = run_invoke("janitor", "--dry-run", "--json", check=True)
    listed = {item["id"] for item in json.loads(result.stdout)["leftovers"]}
    assert listed == set(ids.values())
    assert "would remove" in result.stderr
    assert all(_alive(aws, ids).values())


def test_a_killed_bake_is_known_dead_at_once_a_live_one_is_left(kiln_settings, clean_sandbox):
    table = f"kiln-locks-janitor-{time.time_ns()}"
    aws = connect(kiln_settings(repo={"lock_table": table}))
    deployer(aws.settings)
    make_lock_table(_admin(aws), table)
    live_run, killed_run = "20990101T000000-live02", "20990101T000000-kill01"
    live = _leftovers(aws, live_run, kiln_tags.expires_at(60), version="1.5.0")
    killed = _leftovers(aws, killed_run, kiln_tags.expires_at(60))
    baking = subprocess.Popen([sys.executable, "-c", HOLD_BAKE_LEASE,
                               str(clean_sandbox.state_dir), table, "1.4.2", killed_run],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert baking.stdout.readline().strip() == "held"
        with locks.lease(aws, table, locks.bake_key("hello-web", "1.5.0"),
                         locks.owner_description(live_run)):
            assert janitor.run(aws, dry_run=True)["leftovers"] == []  # both runs alive
            baking.kill()  # kill -9: no release, no cleanup
            baking.wait()
            result = janitor.run(aws)
        assert {(i["kind"], i["id"]) for i in result["leftovers"]} == set(killed.items())
        assert {i["reason"] for i in result["leftovers"]} == {
            f"run {killed_run} is not running (no live lease on bake/hello-web/1.4.2)"}
        assert not any(_alive(aws, killed).values())
        assert all(_alive(aws, live).values())
    finally:
        baking.kill()
        baking.wait()
    # Its lease released, the live run's resources are leftovers too (the bake itself releases
    # them first; these stand for a bake that died between the two).
    assert {i["id"] for i in janitor.run(aws)["leftovers"]} == set(live.values())


def test_a_place_that_refuses_does_not_stop_the_others(aws, clean_sandbox, run_invoke):
    """The deployer role in prod may not describe instances: prod is reported, the build account
    is still swept, and the task exits non-zero naming the place."""
    ids = _leftovers(aws, "20200101T000000-here01", PAST)
    prod_admin = _admin(aws.account("prod"))
    prod_admin.client("iam").put_role_policy(
        RoleName="kiln-deployer", PolicyName="no-instances", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Deny", "Action": "ec2:DescribeInstances", "Resource": "*"}]}))
    prod_ec2 = prod_admin.client("ec2")
    prod_ec2.create_key_pair(KeyName="kiln-prod-left", TagSpecifications=[kiln_tags.spec(
        "key-pair", kiln_tags.kiln_tags("hello-web", "bake-key", run_id="20200101T000000-prod02",
                                        **{kiln_tags.EXPIRES_AT: PAST}))])
    result = janitor.run(aws)
    assert not any(_alive(aws, ids).values())
    # prod's instances cannot be listed; its other kinds are still swept
    assert prod_ec2.describe_key_pairs(Filters=[
        {"Name": "key-name", "Values": ["kiln-prod-left"]}])["KeyPairs"] == []
    assert [(f["account"], f["region"]) for f in result["failures"]] == [("prod", "us-east-1")]
    assert "ec2:DescribeInstances" in result["failures"][0]["error"]
    cli = run_invoke("janitor")
    assert cli.returncode != 0
    assert "janitor: 1 place(s) failed, the others were swept; first: prod, us-east-1" in \
        cli.stderr.strip().splitlines()[-1]


def test_an_account_not_bootstrapped_is_reported_and_the_others_swept(kiln_settings,
                                                                       clean_sandbox):
    aws = connect(kiln_settings())  # prod has no deployer role yet
    ids = _leftovers(aws, "20200101T000000-here02", PAST)
    result = janitor.run(aws)
    assert not any(_alive(aws, ids).values())
    assert [(f["account"], f["region"]) for f in result["failures"]] == [("prod", "*")]
    assert "kiln-deployer" in result["failures"][0]["error"]
