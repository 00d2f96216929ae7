"""Provisioning a bake instance over SSH, through the sandbox's real sshd, with real chef-solo.

Each test reaches its instance the way the bake does: CreateKeyPair and RunInstances in the
sandbox's moto server, then Fabric to the instance's PublicIpAddress on the sandbox sshd port with
the key pair's private key. The session lands inside the sandbox instance, where chef-solo is the
real one (/usr/bin/chef-solo). The cookbooks are small real ones from tests/chef/: `probe`
installs an RPM shipped beside it and runs the smoke commands; `failing` asks dnf for a package
no repository has.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from fabric import Connection

from cloud.errors import KilnError
from cloud.target import connect
from packager.signing import package_digest
from provisioner import chef
from provisioner.provision import (
    LinePrefixer,
    ProvisionPlan,
    SshTarget,
    console_fingerprints,
    load_private_key,
    provision,
    wait_for_ssh,
)
from sandbox.machines import instances as machines
from tests.test_sandbox_instances import ssh_group

TEST_CHEF = Path(__file__).resolve().parent / "chef"
BAKE_KEY_TAGS = [{"ResourceType": "key-pair",
                  "Tags": [{"Key": "kiln:role", "Value": "bake-key"}]}]

SPEC = """\
Name: kiln-probe
Version: 1.4.2
Release: 1
Summary: An empty package for provisioning tests
License: Apache-2.0
BuildArch: noarch
%description
Installed by the probe cookbook with rpm_package; it has no files.
%files
"""


@pytest.fixture(scope="session")
def probe_chef(tmp_path_factory) -> Path:
    """The probe cookbook's chef folder, with kiln-probe-1.4.2-1.noarch.rpm in its files."""
    work = tmp_path_factory.mktemp("probe-rpm")
    (work / "probe.spec").write_text(SPEC)
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {work}",
                    str(work / "probe.spec")], check=True, capture_output=True,
                   env={"HOME": str(work), "PATH": "/usr/bin:/bin"})
    folder = work / "chef"
    shutil.copytree(TEST_CHEF / "probe", folder)
    files = folder / "cookbooks/kiln_app/files/default"
    files.mkdir(parents=True)
    next((work / "RPMS").rglob("*.rpm")).rename(files / "kiln-probe.rpm")
    return folder


@pytest.fixture
def bake_settings(kiln_settings):
    """Settings overlaid by the sandbox (sshd port and user), the way every task gets them."""

    def build(**bake):
        settings = kiln_settings(bake={"smoke_commands": [], **bake})
        aws = connect(settings)
        # The sandbox overlay sets its own install command; these tests choose theirs.
        settings.bake["chef_install_command"] = bake.get("chef_install_command")
        return settings, aws

    return build


@contextmanager
def bake_instance(settings, aws, key_type: str = "ed25519"):
    """A bake key pair and an instance in the sandbox's EC2: (SshTarget, the instance's id)."""
    ec2 = aws.client("ec2")
    name = f"kiln-provision-test-{uuid.uuid4().hex[:8]}"
    key = ec2.create_key_pair(KeyName=name, KeyType=key_type, TagSpecifications=BAKE_KEY_TAGS)
    image = ec2.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["al2023-ami-2023.*"]},
        {"Name": "architecture", "Values": ["x86_64"]}])["Images"][0]["ImageId"]
    instance_id = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName=name,
                                    InstanceType="t3.small", SecurityGroupIds=[ssh_group(ec2)])[
        "Instances"][0]["InstanceId"]
    try:
        described = ec2.describe_instances(InstanceIds=[instance_id])
        address = described["Reservations"][0]["Instances"][0]["PublicIpAddress"]
        console = ec2.get_console_output(InstanceId=instance_id)["Output"]
        target = SshTarget(instance_id, address, settings.bake.ssh_port, settings.bake.ssh_user,
                           key["KeyMaterial"], console_fingerprints(console))
        yield target, instance_id
    finally:
        ec2.terminate_instances(InstanceIds=[instance_id])
        ec2.delete_key_pair(KeyName=name)


def probe_plan(chef_dir: Path, **changes) -> ProvisionPlan:
    values = {"app": "kiln-probe", "version": "1.4.2", "release": "1", "package": "kiln-probe",
              "service": None, "repo_baseurl": "http://127.0.0.1:9/unused",
              "gpgkey_url": "http://127.0.0.1:9/unused/key", "chef_dir": chef_dir}
    values.update(changes)
    return ProvisionPlan(**values)


def on_instance(target: SshTarget, command: str) -> str:
    with Connection(target.host, user=target.user, port=target.port,
                    connect_kwargs={"pkey": target.pkey(), "look_for_keys": False,
                                    "allow_agent": False}) as conn:
        return conn.run(command, hide=True, in_stream=False).stdout


# -- the whole step -------------------------------------------------------------------------------

def test_provision_runs_real_chef_streams_its_output_and_verifies(bake_settings, probe_chef,
                                                                  monkeypatch):
    """The smoke check waits for a file that only a reader of chef's live output creates."""
    settings, aws = bake_settings(sudo=True)
    wait = ("echo waiting for go-ahead; while [ ! -e /tmp/go-ahead ]; do sleep 0.1; done; "
            "echo go-ahead seen")
    plan = probe_plan(probe_chef,
                      smoke_commands=(wait, "test -f /home/ec2-user/kiln-bake/node.json"),
                      package_digest=package_digest(probe_rpm(probe_chef)))
    with bake_instance(settings, aws, key_type="rsa") as (target, _):
        wait_for_ssh(target, timeout=20)
        seen = []

        class Watcher(io.StringIO):
            def write(self, text):
                seen.append(text)
                if text.startswith("chef|     [execute] waiting for go-ahead"):
                    on_instance(target, "touch /tmp/go-ahead")
                return len(text)

        monkeypatch.setattr(sys, "stderr", Watcher())
        result = provision(target, plan, settings)
        monkeypatch.undo()
        staging = "/home/ec2-user/kiln-bake"
        # The cookbooks, node.json and solo.rb (checked by the smoke command) stay out of the image.
        assert on_instance(target, f"test -e {staging} || echo gone").strip() == "gone"
        assert on_instance(target, "rpm -q kiln-probe").strip() == "kiln-probe-1.4.2-1.noarch"
    assert result["instance_id"] == target.instance_id
    assert result["staging_dir"] == staging
    assert result["chef_version"] == "18.5.0"
    assert result["chef_installed"] is False
    assert result["cookbook_digest"] == chef.cookbook_digest(plan.chef_dir)
    assert set(result["timings"]) == {"upload", "chef_check", "chef_run", "verify", "cleanup"}
    err = "".join(seen)
    assert "chef| Chef Infra Client, version 18.5.0" in err
    assert "rpm_package[kiln-probe] action install" in err
    assert "go-ahead seen" in err[err.index("[execute] waiting for go-ahead"):]
    assert "verified kiln-probe-1.4.2-1 and 2 smoke check(s)" in err


def test_a_chef_run_past_chef_timeout_is_stopped(bake_settings, probe_chef):
    settings, aws = bake_settings(chef_timeout=2)
    with bake_instance(settings, aws) as (target, _):
        started = time.monotonic()
        with pytest.raises(KilnError) as failure:
            provision(target, probe_plan(probe_chef), settings)
        # The upload and `chef-solo --version` come first; the run itself is cut at 2 s.
        assert time.monotonic() - started < 30
    assert str(failure.value) == f"chef-solo on {target.where} timed out after 2 s"


def test_failing_chef_stops_the_bake_with_its_exit_code(bake_settings, capsys):
    settings, aws = bake_settings(chef_version="17.10.0")
    with bake_instance(settings, aws) as (target, _), pytest.raises(KilnError) as failure:
        provision(target, probe_plan(TEST_CHEF / "failing"), settings)
    assert str(failure.value).startswith(
        f"chef-solo failed on {target.instance_id} at {target.host}:{target.port} with exit code "
        f"1 (last output: ")
    err = capsys.readouterr().err
    # stdout and stderr of chef-solo arrive in order, each line prefixed.
    assert "chef| Chef Infra Client, version 18.5.0" in err
    assert "dnf_package[kiln-probe] action install" in err
    assert "has chef 18.5.0, not the pinned kiln.bake.chef_version 17.10.0" in err
    assert "verified" not in err


def test_missing_chef_solo_runs_the_install_command(bake_settings, probe_chef, capsys):
    settings, aws = bake_settings()
    with bake_instance(settings, aws) as (target, _):
        chef_solo = "/home/ec2-user/opt/chef/bin/chef-solo"
        settings.bake["chef_solo"] = chef_solo
        settings.bake["chef_install_command"] = (
            "echo installing chef {version} && mkdir -p ~/opt/chef/bin && "
            "ln -s /usr/bin/chef-solo ~/opt/chef/bin/chef-solo")
        result = provision(target, probe_plan(probe_chef), settings)
        assert on_instance(target, f"readlink {chef_solo}").strip() == "/usr/bin/chef-solo"
    assert result["chef_installed"] is True
    assert result["chef_version"] == "18.5.0"
    err = capsys.readouterr().err
    assert "install| installing chef 18.5.0" in err
    assert "chef| Infra Phase complete" in err


@pytest.mark.parametrize(("install", "message"), [
    (None, r"chef check: /nonexistent/chef-solo is not on i-\w+ at 127\.0\.0\.1:\d+ \(exit code "
           r"(127|1)\) and kiln\.bake\.chef_install_command is not set"),
    ("true", r"chef check: /nonexistent/chef-solo still missing on i-\w+ at \S+ after "
             r"kiln\.bake\.chef_install_command \(exit code (127|1): "
             r".*(not found|No such file or directory)\)"),
    ("echo no network; exit 6", r"chef install failed on i-\w+ at \S+ with exit code 6 "
                                r"\(last output: no network\)"),
])
def test_chef_solo_that_cannot_be_installed_fails_clearly(bake_settings, probe_chef, install,
                                                          message):
    settings, aws = bake_settings(chef_solo="/nonexistent/chef-solo", chef_install_command=install)
    with bake_instance(settings, aws) as (target, _), pytest.raises(KilnError, match=message):
        provision(target, probe_plan(probe_chef), settings)


def test_a_sandbox_without_chef_solo_fails_in_one_line_saying_so(kiln_settings, probe_chef):
    settings = kiln_settings(bake={"smoke_commands": [], "chef_solo": "/nonexistent/chef-solo"})
    aws = connect(settings)  # the sandbox overlay's own install command
    with bake_instance(settings, aws) as (target, _), pytest.raises(KilnError) as failure:
        provision(target, probe_plan(probe_chef), settings)
    assert "\n" not in str(failure.value)
    assert "sandbox: no chef-solo on this machine: install Chef Infra Client 18.5.0" in str(
        failure.value)


def test_verification_catches_a_wrong_version(bake_settings, probe_chef):
    settings, aws = bake_settings()
    plan = probe_plan(probe_chef, release="2")
    with bake_instance(settings, aws) as (target, _), pytest.raises(KilnError) as failure:
        provision(target, plan, settings)
    assert str(failure.value) == (f"verify: {target.where} has kiln-probe 1.4.2-1 installed, "
                                  f"expected 1.4.2-2")


def probe_rpm(chef_dir: Path) -> Path:
    return chef_dir / "cookbooks/kiln_app/files/default/kiln-probe.rpm"


def test_verification_catches_a_package_kiln_did_not_publish(bake_settings, probe_chef):
    """Same name, version and release, other content: the header and payload digests differ."""
    settings, aws = bake_settings()
    published = package_digest(probe_rpm(probe_chef))
    other = "0" * 64 + " " + "1" * 64
    with bake_instance(settings, aws) as (target, _), pytest.raises(KilnError) as failure:
        provision(target, probe_plan(probe_chef, package_digest=other), settings)
    assert str(failure.value) == (
        f"verify: kiln-probe-1.4.2-1 on {target.where} is not the package Kiln published "
        f"(header and payload sha256 {published[:16]}…, expected {other[:16]}…)")


def test_verification_reruns_the_smoke_checks(bake_settings, probe_chef):
    settings, aws = bake_settings()
    once = "test -e /tmp/checked && echo no answer on /health >&2 && exit 1; touch /tmp/checked"
    plan = probe_plan(probe_chef, smoke_commands=("true", once))
    with bake_instance(settings, aws) as (target, _), pytest.raises(KilnError) as failure:
        provision(target, plan, settings)
    assert str(failure.value) == (
        f"smoke check failed on {target.where} with exit code 1: {once} (no answer on /health)")


def test_plan_for_release_fills_smoke_commands_from_settings(kiln_settings):
    settings = kiln_settings()
    plan = ProvisionPlan.for_release(
        settings, app="hello-web", version="2.0.0-rc.1", release="1", package="hello-web",
        service="hello-web", repo_baseurl="https://r", gpgkey_url="https://r/key")
    assert plan.smoke_commands == (
        "curl -fsS --max-time 5 http://127.0.0.1:8080/health "
        "| grep -F -- '\"version\": \"2.0.0~rc.1-1\"'",)
    assert plan.expected == "2.0.0~rc.1-1"
    assert plan.node()["kiln_app"]["smoke"]["commands"] == list(plan.smoke_commands)


# -- SSH readiness and keys -------------------------------------------------------------------

def test_wait_for_ssh_returns_once_the_instance_answers(bake_settings):
    settings, aws = bake_settings()
    with bake_instance(settings, aws) as (target, home):
        waited = wait_for_ssh(target, timeout=20)
        assert waited < 20
        sessions = machines.instance_dir(settings.sandbox.state_dir, home) / "sessions.log"
        assert "true" in sessions.read_text()


def test_wait_for_ssh_is_bounded_when_nothing_listens(bake_settings):
    settings, aws = bake_settings()
    with bake_instance(settings, aws) as (target, home):
        closed = SshTarget(target.instance_id, target.host, _closed_port(), target.user,
                           target.private_key)
        with pytest.raises(KilnError, match=rf"^SSH to {target.instance_id} at 127\.0\.0\.1:"
                                            rf"{closed.port} not ready after 1\.5 s \(last "
                                            rf"error: NoValidConnectionsError"):
            wait_for_ssh(closed, timeout=1.5)


def test_wait_for_ssh_is_bounded_when_the_key_is_not_authorized(bake_settings):
    settings, aws = bake_settings()
    with bake_instance(settings, aws) as (target, home):
        # A key that sshd knows nothing of, as before cloud-init installs the key pair's.
        wrong = SshTarget(target.instance_id, target.host, target.port, target.user,
                          _fresh_key(), target.host_fingerprints)
        with pytest.raises(KilnError, match=r"not ready after 1 s \(last error: "
                                            r"AuthenticationException"):
            wait_for_ssh(wrong, timeout=1)


@pytest.mark.parametrize("printed", [(), ("SHA256:" + "A" * 43,)])
def test_ssh_accepts_only_a_host_key_the_instance_printed(bake_settings, printed):
    """No trust on first use: a host key that is not among the console's fingerprints (or no
    fingerprints at all) fails at once, naming the key, without running anything."""
    settings, aws = bake_settings()
    with bake_instance(settings, aws) as (target, home):
        assert len(target.host_fingerprints) == 1
        other = SshTarget(target.instance_id, target.host, target.port, target.user,
                          target.private_key, printed)
        started = time.monotonic()
        with pytest.raises(KilnError, match=rf"host key SHA256:\S+ of {target.instance_id} .*is "
                                            r"not one the instance printed to its console"):
            wait_for_ssh(other, timeout=30)
        assert time.monotonic() - started < 15
        wait_for_ssh(target, timeout=20)


def test_console_fingerprints_reads_cloud_inits_block():
    key = "SHA256:" + "b" * 43
    text = ("ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
            f"ec2: 256 {key} root@ip-10-0-0-1 (ED25519)\n"
            "ec2: -----END SSH HOST KEY FINGERPRINTS-----\n"
            f"unrelated 256 SHA256:{'c' * 43}\n")
    assert console_fingerprints(text) == (key,)


def test_a_bad_private_key_is_a_clear_error():
    with pytest.raises(KilnError, match="private key of i-0abc: not an RSA, ed25519 or ECDSA"):
        SshTarget("i-0abc", "127.0.0.1", 22, "ec2-user", "not a key").pkey()
    with pytest.raises(KilnError, match="private key of key pair"):
        load_private_key("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----")


def test_line_prefixer_joins_partial_writes(capsys):
    out = LinePrefixer("chef| ")
    for chunk in ("Star", "ting\r\nline two\n", "", "tail without newline"):
        out.write(chunk)
    out.close()
    assert capsys.readouterr().err == "chef| Starting\nchef| line two\nchef| tail without newline\n"
    assert out.last == "tail without newline"


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fresh_key():
    import paramiko

    return paramiko.RSAKey.generate(2048)


def test_the_failure_line_names_dnfs_own_reason(capsys):
    out = LinePrefixer("chef| ")
    for line in ("Problem: conflicting requests",
                 "  - nothing provides nodejs >= 18 needed by app-1.0.0-1.noarch",
                 "[2026-12-01T21:29:35+00:00] FATAL: Chef::Exceptions::Package: had an error: "
                 "No candidate version available for app"):
        out.write(line + "\n")
    out.close()
    assert out.reason == "nothing provides nodejs >= 18 needed by app-1.0.0-1.noarch"
    assert LinePrefixer("x").reason == ""
