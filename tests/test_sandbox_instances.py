"""Sandbox bake instances through a real sshd: key pairs from the sandbox's EC2, Fabric sessions
in the instance's world, the chef-solo stand-in (Chef itself cannot be installed here: the
stand-in is the one fake, and these tests exercise it as one) installing a signed RPM with dnf."""

from __future__ import annotations

import io
import json
import os
import subprocess
import textwrap
from pathlib import Path

import boto3
import paramiko
import pytest
from fabric import Config, Connection

from sandbox import instances
from sandbox.control import ensure_up
from sandbox.patches.base_images import AMAZON
from sandbox.sshd import Sshd, current_user


@pytest.fixture
def ec2(clean_sandbox):
    return boto3.client("ec2", region_name="us-east-1")


def base_image(ec2) -> str:
    images = ec2.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["al2023-ami-2023.*-x86_64"]},
        {"Name": "architecture", "Values": ["x86_64"]}])["Images"]
    return max(images, key=lambda i: i["CreationDate"])["ImageId"]


def launch(ec2, key_name: str = "bake-key", key_type: str = "rsa") -> tuple[dict, str]:
    pem = ec2.create_key_pair(KeyName=key_name, KeyType=key_type)["KeyMaterial"]
    instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1,
                                 KeyName=key_name)["Instances"][0]
    return instance, pem


def connect(box, instance: dict, pem: str) -> Connection:
    loader = paramiko.RSAKey if "RSA" in pem else paramiko.Ed25519Key
    pkey = loader.from_private_key(io.StringIO(pem))
    return Connection(instance["PublicIpAddress"], user=current_user(),
                      port=Sshd(box.state_dir).port, connect_timeout=10,
                      config=Config(overrides={"run": {"in_stream": False}}),
                      connect_kwargs={"pkey": pkey, "look_for_keys": False,
                                      "allow_agent": False})


def test_run_instances_authorizes_the_key_pair_for_that_instance(ec2, clean_sandbox):
    instance, pem = launch(ec2)
    world = instances.instance_dir(clean_sandbox.state_dir, instance["InstanceId"])
    assert instance["PublicIpAddress"] == "127.0.0.1"
    assert instance["PrivateIpAddress"] != "127.0.0.1"
    with connect(clean_sandbox, instance, pem) as ssh:
        home = ssh.run("echo $HOME", hide=True).stdout.strip()
        assert home == str(world / "home")
        assert ssh.run("pwd", hide=True).stdout.strip() == home
        assert ssh.run("echo $SANDBOX_INSTANCE_ID", hide=True).stdout.strip() == \
            instance["InstanceId"]
        assert ssh.run("exit 3", warn=True, hide=True).exited == 3
        # sudo on the instance is a pass-through, the way Invoke's sudo() calls it
        assert ssh.run("sudo -S -p '[sudo] password: ' -H -u root sh -c 'echo $HOME'",
                       hide=True).stdout.strip() == home


def test_fabric_put_goes_over_sftp_into_the_instance_home(ec2, clean_sandbox, tmp_path):
    instance, pem = launch(ec2, key_type="ed25519")
    source = tmp_path / "node.json"
    source.write_text('{"run_list": []}\n')
    world = instances.instance_dir(clean_sandbox.state_dir, instance["InstanceId"])
    with connect(clean_sandbox, instance, pem) as ssh:
        ssh.run("mkdir -p kiln-bake", hide=True)
        ssh.put(str(source), "kiln-bake/node.json")
        assert (world / "home/kiln-bake/node.json").read_text() == source.read_text()
        back = tmp_path / "back.json"
        ssh.get("kiln-bake/node.json", str(back))
        assert back.read_text() == source.read_text()


def test_terminate_instances_revokes_the_key_and_removes_the_instance(ec2, clean_sandbox):
    instance, pem = launch(ec2)
    world = instances.instance_dir(clean_sandbox.state_dir, instance["InstanceId"])
    with connect(clean_sandbox, instance, pem) as ssh:
        ssh.run("true", hide=True)
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    assert not world.exists()
    assert instance["InstanceId"] not in Sshd(clean_sandbox.state_dir).authorized_keys.read_text()
    with pytest.raises(paramiko.AuthenticationException), \
            connect(clean_sandbox, instance, pem) as ssh:
        ssh.run("true", hide=True)


def test_reset_forgets_every_instance(ec2, clean_sandbox):
    instance, _ = launch(ec2)
    clean_sandbox.reset()
    assert Sshd(clean_sandbox.state_dir).authorized_keys.read_text() == ""
    assert not instances.instance_dir(clean_sandbox.state_dir, instance["InstanceId"]).exists()


def test_an_instance_without_a_public_ip_keeps_none(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1,
                                 SubnetId=subnet)["Instances"][0]
    assert "PublicIpAddress" not in instance
    assert instance["PrivateIpAddress"].startswith("10.9.1.")


def test_base_images_match_the_default_filters_in_every_region_after_reset(clean_sandbox):
    clean_sandbox.reset()
    for region in ("us-east-1", "eu-west-1"):
        ec2 = boto3.client("ec2", region_name=region)
        images = ec2.describe_images(Owners=["amazon"], Filters=[
            {"Name": "name", "Values": ["al2023-ami-2023.*-x86_64"]},
            {"Name": "architecture", "Values": ["x86_64"]}])["Images"]
        images.sort(key=lambda i: i["CreationDate"], reverse=True)
        assert [i["Name"] for i in images] == [
            "al2023-ami-2023.6.20241121.0-kernel-6.1-x86_64",
            "al2023-ami-2023.6.20241111.0-kernel-6.1-x86_64"]
        newest = images[0]
        assert newest["OwnerId"] == AMAZON and newest["ImageOwnerAlias"] == "amazon"
        assert newest["RootDeviceType"] == "ebs" and newest["RootDeviceName"] == "/dev/xvda"
        assert newest["EnaSupport"] is True and newest["VirtualizationType"] == "hvm"
        assert newest["BlockDeviceMappings"][0]["DeviceName"] == "/dev/xvda"


def test_overlay_points_the_bake_at_the_sandbox_sshd(kiln_settings, sandbox_box, capsys):
    settings = kiln_settings()
    ensure_up(settings)
    port = Sshd(sandbox_box.state_dir).port
    assert settings.bake.ssh_port == port
    assert settings.bake.ssh_user == current_user()
    assert settings.bake.ssh_cidrs == ["127.0.0.1/32"]
    assert settings.bake.chef_install_command == "sandbox-install-chef {version}"
    assert settings.bake.sudo is True
    assert settings.bake.smoke_commands == ["sandbox-verify {package}"]
    assert (f"sandbox: bake instances are reached over the sandbox sshd at 127.0.0.1:{port}"
            in capsys.readouterr().err)
    settings.bake["chef_install_command"] = None  # a caller's own choice survives a reconnect
    ensure_up(settings)
    assert settings.bake.chef_install_command is None and settings.bake.ssh_port == port
    configured = kiln_settings(bake={"ssh_cidrs": ["10.0.0.0/8"], "smoke_commands": ["true"]},
                               sandbox={"smoke_commands": None})
    ensure_up(configured)
    assert configured.bake.ssh_cidrs == ["10.0.0.0/8"]
    assert configured.bake.smoke_commands == ["true"]


# -- the chef-solo stand-in --------------------------------------------------------------------
@pytest.fixture(scope="module")
def signed_repo(tmp_path_factory) -> dict:
    """A yum repo with one signed RPM (a %post scriptlet included) and signed metadata."""
    work = tmp_path_factory.mktemp("repo")
    env = {**os.environ, "HOME": str(work), "GNUPGHOME": str(work / "gnupg")}
    (work / "gnupg").mkdir(mode=0o700)
    run = lambda *args: subprocess.run(args, check=True, env=env, capture_output=True)  # noqa: E731
    run("gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Kiln Test <test@kiln>",
        "rsa2048", "sign", "never")
    spec = work / "hello.spec"
    spec.write_text(textwrap.dedent("""\
        Name: hello-web
        Version: 1.0.0
        Release: 1
        Summary: test app
        License: MIT
        BuildArch: noarch
        %description
        test app
        %install
        mkdir -p %{buildroot}/opt/hello-web
        echo hello > %{buildroot}/opt/hello-web/index.html
        %post
        echo installed > /opt/hello-web/post-ran
        %files
        /opt/hello-web/index.html
        """))
    run("rpmbuild", "-bb", "--quiet", "--define", f"_topdir {work}", str(spec))
    repo = work / "repo"
    repo.mkdir()
    rpm = next((work / "RPMS").rglob("*.rpm"))
    run("rpmsign", "--addsign", "--define", "_gpg_name Kiln Test", "--define", "__gpg /usr/bin/gpg",
        str(rpm))
    (repo / rpm.name).write_bytes(rpm.read_bytes())
    run("createrepo_c", "--quiet", str(repo))
    run("gpg", "--batch", "--detach-sign", "--armor", str(repo / "repodata/repomd.xml"))
    key = repo / "RPM-GPG-KEY-kiln"
    key.write_bytes(run("gpg", "--armor", "--export", "Kiln Test").stdout)
    run("gpgconf", "--kill", "gpg-agent")
    return {"id": "kiln", "name": "Kiln test repo", "baseurl": repo.as_uri() + "/",
            "gpgkey": key.as_uri(), "gpgcheck": True, "repo_gpgcheck": True}


def node(repo: dict, smoke: list[str]) -> dict:
    return {"run_list": ["recipe[kiln_app]"], "kiln_app": {
        "name": "hello-web", "version": "1.0.0", "release": "1", "package": "hello-web-1.0.0-1",
        "service": "hello-web", "repo": repo, "smoke": {"commands": smoke}}}


def stage(ssh: Connection, tmp_path: Path, attributes: dict) -> None:
    cookbook = tmp_path / "cookbooks/kiln_app/recipes"
    cookbook.mkdir(parents=True, exist_ok=True)
    (cookbook / "default.rb").write_text("# the real cookbook lives in chef/\n")
    (tmp_path / "node.json").write_text(json.dumps(attributes))
    (tmp_path / "solo.rb").write_text(
        'cookbook_path [File.expand_path("cookbooks", __dir__)]\n')
    ssh.run("mkdir -p kiln-bake/cookbooks/kiln_app/recipes", hide=True)
    ssh.put(str(cookbook / "default.rb"), "kiln-bake/cookbooks/kiln_app/recipes/default.rb")
    ssh.put(str(tmp_path / "node.json"), "kiln-bake/node.json")
    ssh.put(str(tmp_path / "solo.rb"), "kiln-bake/solo.rb")


def test_chef_solo_stand_in_installs_the_signed_package_and_rpm_sees_it(
        ec2, clean_sandbox, signed_repo, tmp_path):
    instance, pem = launch(ec2)
    root = instances.instance_dir(clean_sandbox.state_dir, instance["InstanceId"]) / "root"
    with connect(clean_sandbox, instance, pem) as ssh:
        assert "(sandbox stand-in)" in ssh.run("chef-solo --version", hide=True).stdout
        stage(ssh, tmp_path, node(signed_repo, ["cat opt/hello-web/index.html",
                                                "sandbox-verify hello-web"]))
        result = ssh.sudo("chef-solo -c kiln-bake/solo.rb -j kiln-bake/node.json", hide=True)
        assert "sandbox stand-in for chef-solo" in result.stdout
        assert "skipped: no systemd" in result.stdout
        assert "      hello" in result.stdout  # the smoke command's output
        assert ssh.run("rpm -q hello-web", hide=True).stdout.strip() == \
            "hello-web-1.0.0-1.noarch"
        ssh.run("sandbox-verify hello-web", hide=True)
        (root / "opt/hello-web/index.html").write_text("changed\n")
        assert ssh.run("sandbox-verify hello-web", warn=True, hide=True).exited == 1
    assert "gpgcheck=1\nrepo_gpgcheck=1" in (root / "etc/yum.repos.d/kiln.repo").read_text()
    assert (root / "opt/hello-web/post-ran").read_text() == "installed\n"  # ran in the root's sh


def test_chef_solo_stand_in_fails_on_a_failing_smoke_check(
        ec2, clean_sandbox, signed_repo, tmp_path):
    instance, pem = launch(ec2)
    with connect(clean_sandbox, instance, pem) as ssh:
        stage(ssh, tmp_path, node(signed_repo, ["test -f opt/hello-web/missing"]))
        result = ssh.run("chef-solo -c kiln-bake/solo.rb -j kiln-bake/node.json", warn=True,
                         hide=True)
    assert result.exited == 1
    assert "FATAL: execute[smoke: test -f opt/hello-web/missing]: exited 1" in result.stdout


def test_chef_solo_stand_in_refuses_an_unsigned_package(ec2, clean_sandbox, signed_repo,
                                                        tmp_path):
    unsigned = tmp_path / "unsigned"
    unsigned.mkdir()
    subprocess.run(["cp", "-r", Path(signed_repo["baseurl"][7:]).as_posix() + "/.",
                    str(unsigned)], check=True)
    rpm = next(unsigned.glob("*.rpm"))
    subprocess.run(["rpmsign", "--delsign", str(rpm)], check=True, capture_output=True,
                   env={**os.environ, "HOME": str(tmp_path)})
    subprocess.run(["createrepo_c", "--quiet", str(unsigned)], check=True, capture_output=True)
    repo = {**signed_repo, "baseurl": unsigned.as_uri() + "/", "repo_gpgcheck": False}
    instance, pem = launch(ec2)
    with connect(clean_sandbox, instance, pem) as ssh:
        stage(ssh, tmp_path, node(repo, []))
        result = ssh.run("chef-solo -j kiln-bake/node.json", warn=True, hide=True)
        assert result.exited == 1
        assert "FATAL: dnf_package[hello-web-1.0.0-1]" in result.stdout
        assert ssh.run("rpm -q hello-web", warn=True, hide=True).exited != 0


def test_the_sandbox_chef_install_command_pins_the_reported_version(ec2, clean_sandbox):
    instance, pem = launch(ec2)
    with connect(clean_sandbox, instance, pem) as ssh:
        ssh.run("sudo sandbox-install-chef 18.6.1", hide=True)
        assert ssh.run("chef-solo --version", hide=True).stdout.strip() == \
            "Chef Infra Client: 18.6.1 (sandbox stand-in)"
