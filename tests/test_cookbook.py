"""The kiln_app cookbook under real chef-solo 18.5.0, on a sandbox instance (Amazon Linux 2023 to
ohai: dnf_package, yum_repository, systemd), against the sandbox's signed repository.

Each recipe compiles and converges on its own, in run order; a converge of the whole cookbook
after that updates nothing. A repository whose metadata signature does not verify and a package
whose %post scriptlet fails both fail the run, each with dnf's or rpm's own reason.
"""

from __future__ import annotations

import subprocess
import uuid
from contextlib import contextmanager

import boto3
import pytest
import yaml

from cloud.errors import KilnError
from cloud.target import connect
from packager import repo
from provisioner import chef
from provisioner import provision as provisioning
from provisioner.provision import (
    ProvisionPlan,
    SshTarget,
    console_fingerprints,
    provision,
    wait_for_ssh,
)
from tests.bake_helpers import bootstrapped_sandbox, write_probe_manifest
from tests.conftest import INVOKE, ROOT, project_config
from tests.test_sandbox_instances import ssh_group

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cookbook")]

BAKE_KEY_TAGS = [{"ResourceType": "key-pair",
                  "Tags": [{"Key": "kiln:role", "Value": "bake-key"}]}]
RECIPES = ("repo", "install", "service", "smoke")


@pytest.fixture(scope="module")
def published(sandbox_box, tmp_path_factory):
    """A bootstrapped sandbox whose repo holds hello-web 1.0.0, published once for the module
    (a test may add a package beside it, or change the repo and put it back)."""
    box = bootstrapped_sandbox(sandbox_box, tmp_path_factory)
    folder = tmp_path_factory.mktemp("publish")
    runtime = folder / "publish.yaml"
    runtime.write_text(yaml.safe_dump({"kiln": {
        "sandbox": {"state_dir": str(box.state_dir)}, "dist": str(folder / "dist")}}))
    done = subprocess.run([INVOKE, "-f", str(runtime), "publish", "--version", "1.0.0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return box


@pytest.fixture
def settings(published, kiln_settings):
    config = kiln_settings(bake={"smoke_retries": 2, "smoke_retry_delay": 1})
    return config, connect(config)


@contextmanager
def instance(config, aws):
    ec2 = aws.client("ec2")
    name = f"kiln-cookbook-test-{uuid.uuid4().hex[:8]}"
    key = ec2.create_key_pair(KeyName=name, KeyType="ed25519", TagSpecifications=BAKE_KEY_TAGS)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance_id = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName=name,
                                    SecurityGroupIds=[ssh_group(ec2)])[
        "Instances"][0]["InstanceId"]
    try:
        console = ec2.get_console_output(InstanceId=instance_id)["Output"]
        target = SshTarget(instance_id, "127.0.0.1", config.bake.ssh_port, config.bake.ssh_user,
                           key["KeyMaterial"], console_fingerprints(console))
        wait_for_ssh(target, timeout=30)
        yield target
    finally:
        ec2.terminate_instances(InstanceIds=[instance_id])
        ec2.delete_key_pair(KeyName=name)


def plan_for(config, aws, app="hello-web", service="hello-web") -> ProvisionPlan:
    return ProvisionPlan.for_release(
        config, app=app, version="1.0.0", release="1", package=app, service=service,
        repo_baseurl=repo.baseurl(aws), gpgkey_url=repo.gpgkey_url(aws),
        gpgkey_fingerprint=repo.Repo.of(aws).pinned)


def chef_run(target, config, staging: str, recipe: str | None = None) -> str:
    """chef-solo with the uploaded solo.rb and node.json (run list `recipe` when given)."""
    with provisioning.connection(target) as conn:
        session = provisioning._Session(conn, target, config.bake)
        override = f" -o 'recipe[{recipe}]'" if recipe else ""
        result = session.run("chef-solo", f"cd {staging} && sudo -n chef-solo -c solo.rb "
                                          f"-j node.json{override}", hide=True)
    return result.stdout


def upload(target, config, plan) -> str:
    with provisioning.connection(target) as conn:
        return provisioning._Session(conn, target, config.bake).upload(plan)


def updated(output: str) -> tuple[int, int]:
    line = next(line for line in output.splitlines() if "resources updated in" in line)
    done, total = line.split("complete, ", 1)[1].split(" resources", 1)[0].split("/")
    return int(done), int(total)


def test_each_recipe_converges_in_order_and_a_second_converge_updates_nothing(settings):
    config, aws = settings
    plan = plan_for(config, aws)
    with instance(config, aws) as target:
        staging = upload(target, config, plan)
        outputs = {}
        for name in RECIPES:
            output = outputs[name] = chef_run(target, config, staging, f"kiln_app::{name}")
            assert updated(output)[0] > 0 or name == "smoke", output
        assert "dnf_package[hello-web]" not in output
        # Chef takes the instance for Amazon Linux: yum_repository, and dnf installs.
        assert "yum_repository[kiln] action create" in outputs["repo"]
        assert "dnf_package[hello-web] action install" in outputs["install"]
        again = chef_run(target, config, staging)
        assert updated(again)[0] == 0, again
        with provisioning.connection(target) as conn:
            assert conn.run("systemctl is-enabled hello-web", hide=True).stdout.strip() == \
                "enabled"
            assert '"version": "1.0.0-1"' in conn.run("curl -fsS http://127.0.0.1:8080/health",
                                                       hide=True).stdout
            assert conn.run("cat /etc/yum.repos.d/kiln.repo", hide=True).stdout.count(
                "gpgcheck=1") == 2


def test_a_failing_post_scriptlet_fails_the_run_with_its_reason(settings, run_invoke, tmp_path):
    config, aws = settings
    manifest = write_probe_manifest(tmp_path)
    script = tmp_path / "after-install.sh"
    script.write_text("echo cannot set up the probe >&2\nexit 1\n")
    with open(manifest, "a") as handle:
        handle.write(f"scripts:\n  after_install: {script.name}\n")
    run_invoke("publish", "--manifest", manifest, "--version", "1.0.0", check=True)
    plan = plan_for(config, aws, app="bake-probe", service=None)
    with instance(config, aws) as target, pytest.raises(KilnError) as failure:
        provision(target, plan, config)
    assert "Error in POSTIN scriptlet in rpm package bake-probe" in str(failure.value)


def test_metadata_whose_signature_does_not_verify_fails_with_that_reason(settings):
    config, aws = settings
    s3 = boto3.client("s3")
    bucket, prefix = repo.baseurl(aws).split("/", 4)[3], config.repo.prefix
    key = f"{prefix}/repodata/repomd.xml.asc"
    good = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    xml = s3.get_object(Bucket=bucket, Key=f"{prefix}/repodata/repomd.xml")["Body"].read()
    s3.put_object(Bucket=bucket, Key=f"{prefix}/repodata/repomd.xml",
                  Body=xml.replace(b"<revision>", b"<revision>1"))
    try:
        with instance(config, aws) as target, pytest.raises(KilnError) as failure:
            provision(target, plan_for(config, aws), config)
    finally:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/repodata/repomd.xml", Body=xml)
        s3.put_object(Bucket=bucket, Key=key, Body=good)
    assert "GPG signature verification error" in str(failure.value)
    assert "No candidate version" not in str(failure.value)


# -- the team's part: its cookbooks, roles and environment around Kiln's recipe ----------------

EXAMPLE = ROOT / "docs" / "examples" / "team-chef"
TEAM = {"run_list": ["role[runtime]", "recipe[kiln_app]", "recipe[runtime::after_app]"],
        "cookbook_paths": [str(EXAMPLE / "cookbooks")], "roles_dir": str(EXAMPLE / "roles"),
        "environments_dir": str(EXAMPLE / "environments"), "environment": "production",
        "attributes": {"runtime": {"version": "21"}}}


def test_a_team_run_list_converges_its_runtime_before_the_app_and_a_recipe_after_it(
        published, kiln_settings, capsys):
    """The worked example of docs/image-stage.md, with real chef-solo: role[runtime] (from the
    team's roles folder) installs the runtime from the team's cookbook folder before Kiln's
    recipe, whose smoke check runs it; the team's attribute (normal) beats the cookbook's
    default, the environment's override beats the role's default; a recipe after Kiln's sees
    the installed app."""
    runtime_check = "/opt/runtime/bin/runtime | grep -Fx 'runtime 21 heap 1g'"
    config = kiln_settings(bake={
        **TEAM, "smoke_retries": 2, "smoke_retry_delay": 1,
        "smoke_commands": [*project_config()["bake"]["smoke_commands"], runtime_check]})
    aws = connect(config)
    plan = plan_for(config, aws)
    with instance(config, aws) as target:
        result = provision(target, plan, config)
        with provisioning.connection(target) as conn:
            noted = conn.run("cat /opt/runtime/app-release.json", hide=True).stdout
    assert '"version": "1.0.0"' in noted
    chef_output = capsys.readouterr().err
    assert chef_output.index("Recipe: runtime::default") < chef_output.index(
        "Recipe: kiln_app::repo") < chef_output.index("Recipe: runtime::after_app")
    assert "verified hello-web-1.0.0-1 and 2 smoke check(s)" in chef_output
    team = chef.Layout.of(config.bake, provisioning.CHEF_DIR)
    assert result["cookbook_digest"] == team.digest() != chef.cookbook_digest(
        provisioning.CHEF_DIR)


def test_a_role_the_roles_folder_lacks_fails_before_the_instance_is_touched(kiln_settings):
    config = kiln_settings(bake={**TEAM, "run_list": ["role[jdk]", "recipe[kiln_app]"]})
    layout = chef.Layout.of(config.bake, provisioning.CHEF_DIR)
    with pytest.raises(KilnError, match=r"kiln.bake.run_list: role\[jdk\] has no jdk.json or "
                                        r"jdk.rb in .*/roles \(kiln.bake.roles_dir\)"):
        layout.check_roles(config.bake.run_list)
