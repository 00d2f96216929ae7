"""ami.prune: keep the newest N images per place, never one in use, no orphan snapshots."""

import pytest

from accounts import bootstrap
from cloud.target import connect
from provisioner import images, share
from tests.image_helpers import base_image, kms_key, make_image

# Most tests prune the build account only: prod is left out (no role), not bootstrapped.
BUILD_ONLY = {"accounts": {"prod": {"role": None}}}


@pytest.fixture
def aws(kiln_settings):
    return connect(kiln_settings(**BUILD_ONLY))


@pytest.fixture
def versions(admin_aws, clean_sandbox):
    """Images of four versions, created oldest-version-last so the order is by version."""
    ec2 = admin_aws.client("ec2")
    key = kms_key(admin_aws.client("kms"))
    made = {v: make_image(ec2, key, version=v) for v in ("1.10.0", "1.9.0", "1.2.0", "1.0.0")}
    return made


def _snapshot(ec2, image_id):
    return share.snapshot_ids(ec2.describe_images(ImageIds=[image_id])["Images"][0])[0]


def _remaining(ec2):
    return {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}


def test_prune_keeps_the_newest_and_those_a_launch_template_uses(aws, admin_aws, versions):
    ec2 = admin_aws.client("ec2")
    ec2.create_launch_template(LaunchTemplateName="hello-web-v001",
                               LaunchTemplateData={"ImageId": versions["1.0.0"]})
    ec2.create_launch_template_version(LaunchTemplateName="hello-web-v001",
                                       LaunchTemplateData={"ImageId": versions["1.10.0"]})
    doomed = _snapshot(ec2, versions["1.2.0"])

    result = images.prune(aws, "hello-web", 2)

    assert [r["version"] for r in result["removed"]] == ["1.2.0"]
    assert _remaining(ec2) == {versions[v] for v in ("1.10.0", "1.9.0", "1.0.0")}
    reasons = {k["version"]: k["reason"] for k in result["kept"]}
    assert reasons["1.0.0"] == "used by launch template hello-web-v001 version 1"
    assert reasons["1.10.0"] == "one of the 2 newest"
    snapshots = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert doomed not in snapshots
    assert images.prune(aws, "hello-web", 2)["removed"] == []


def test_prune_keeps_an_image_a_server_group_uses(aws, admin_aws, versions):
    ec2 = admin_aws.client("ec2")
    autoscaling = admin_aws.client("autoscaling")
    autoscaling.create_launch_configuration(LaunchConfigurationName="hello-web-v002",
                                            ImageId=versions["1.2.0"], InstanceType="t3.small")
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="hello-web-v002", LaunchConfigurationName="hello-web-v002",
        MinSize=0, MaxSize=0, AvailabilityZones=["us-east-1a"],
        Tags=[{"Key": "kiln:ami", "Value": versions["1.0.0"], "PropagateAtLaunch": False}])

    result = images.prune(aws, "hello-web", 1)

    assert [r["version"] for r in result["removed"]] == ["1.9.0"]
    reasons = {k["version"]: k["reason"] for k in result["kept"]}
    assert reasons["1.2.0"] == ("used by server group hello-web-v002 (launch configuration "
                                "hello-web-v002)")
    assert reasons["1.0.0"] == "used by server group hello-web-v002 (kiln:ami tag)"
    assert versions["1.9.0"] not in _remaining(ec2)


def test_dry_run_removes_nothing(aws, versions):
    result = images.prune(aws, "hello-web", 1, dry_run=True)
    assert len(result["removed"]) == 3
    assert _remaining(aws.client("ec2")) == set(versions.values())


def test_prune_covers_the_prod_account(kiln_settings, admin_aws, clean_sandbox):
    bootstrap.run(admin_aws.settings, admin_aws, yes=True, parts=("prod",))
    aws = connect(kiln_settings())
    prod = admin_aws.admin("prod").client("ec2")
    assert base_image(prod)
    old, new = make_image(prod, None, version="1.0.0"), make_image(prod, None, version="2.0.0")
    result = images.prune(aws, "hello-web", 1)
    assert [(r["account"], r["image_id"]) for r in result["removed"]] == [("prod", old)]
    assert _remaining(prod) == {new}


def test_ami_prune_task_dry_run(run_invoke, aws, versions):
    result = run_invoke("ami.prune", "--keep", "3", "--dry-run", check=True,
                        overrides=BUILD_ONLY)
    assert "would remove" in result.stderr and versions["1.0.0"] in result.stderr
    assert _remaining(aws.client("ec2")) == set(versions.values())


@pytest.mark.parametrize("keep, expected", [("x", "--keep: 'x' is not a whole number"),
                                            ("0", "--keep: must be at least 1, got 0")])
def test_ami_prune_task_refuses_a_bad_keep(run_invoke, aws, versions, keep, expected):
    result = run_invoke("ami.prune", "--keep", keep, overrides=BUILD_ONLY)
    assert result.returncode == 4 and result.stderr.strip().splitlines()[-1] == f"kiln: {expected}"
    assert _remaining(aws.client("ec2")) == set(versions.values())


def _name(ssm, name, image_id):
    ssm.put_parameter(Name=name, Value=image_id, Type="String", Overwrite=True,
                      DataType="aws:ec2:image")


def test_prune_keeps_the_image_an_app_parameter_names(aws, admin_aws, versions):
    """A promotion's parameter (/<prefix>/<app>/<account>/ami) is what a deploy reads: the
    image it names stays even when newer ones are kept (a newer promotion may have failed)."""
    name = f"/{aws.settings.stacks.prefix}/hello-web/{aws.account_name}/ami"
    _name(admin_aws.client("ssm"), name, versions["1.2.0"])

    result = images.prune(aws, "hello-web", 1)

    assert sorted(r["version"] for r in result["removed"]) == ["1.0.0", "1.9.0"]
    reasons = {k["version"]: k["reason"] for k in result["kept"]}
    assert reasons["1.2.0"] == f"used by SSM parameter {name}"


def test_prune_of_a_foundation_keeps_the_image_its_parameter_names(
        run_invoke, aws, admin_aws, clean_sandbox):
    """An app bake starts from the image the foundation's parameter names; pruning the
    foundation's images (`--foundation`) never removes it."""
    ec2 = admin_aws.client("ec2")
    key = kms_key(admin_aws.client("kms"))
    made = {v: make_image(ec2, key, app="foundation/java17", version=v)
            for v in ("1.2.0", "1.1.0", "1.0.0")}
    name = f"/{aws.settings.stacks.prefix}/foundation/java17/ami"
    _name(admin_aws.client("ssm"), name, made["1.0.0"])

    overrides = {**BUILD_ONLY, "foundations": {"java17": {"bake": {"run_list": ["recipe[java]"]}}}}
    result = run_invoke("ami.prune", "--foundation", "java17", "--keep", "1", "--json",
                        check=True, overrides=overrides)

    assert _remaining(ec2) == {made["1.2.0"], made["1.0.0"]}
    assert f"keeping {made['1.0.0']} (1.0.0): used by SSM parameter {name}" in result.stderr
