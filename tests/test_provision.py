"""Provisioning a bake instance over SSH, through the sandbox's real sshd.

Each test reaches its instance the way the bake does: CreateKeyPair and RunInstances in the
sandbox's moto server, then Fabric to the instance's PublicIpAddress on the sandbox sshd port with
the key pair's private key. chef-solo is a FAKE from tests/fakes/ (Chef cannot be installed here),
selected through kiln.bake.chef_solo or put in place by kiln.bake.chef_install_command.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from cloud.errors import KilnError
from cloud.target import connect
from provisioner import chef
from provisioner.provision import (
    CHEF_DIR,
    LinePrefixer,
    ProvisionPlan,
    SshTarget,
    load_private_key,
    provision,
    wait_for_ssh,
)
from sandbox import instances

FAKES = Path(__file__).resolve().parent / "fakes"
FAILING = FAKES / "chef-solo-failing"
RECORDING = FAKES / "chef-solo-recording"

SPEC = """\
Name: kiln-probe
Version: 1.4.2
Release: 1
Summary: An empty package for provisioning tests
License: Apache-2.0
BuildArch: noarch
%description
Installed by the fake chef-solo with rpm --justdb; it has no files.
%files
"""


@pytest.fixture(scope="session")
def probe_repo(tmp_path_factory) -> Path:
    """A folder holding kiln-probe-1.4.2-1.noarch.rpm (the repo's file:// baseurl)."""
    work = tmp_path_factory.mktemp("probe-rpm")
    (work / "probe.spec").write_text(SPEC)
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {work}",
                    str(work / "probe.spec")], check=True, capture_output=True,
                   env={"HOME": str(work), "PATH": "/usr/bin:/bin"})
    repo = work / "repo"
    repo.mkdir()
    for rpm in (work / "RPMS").rglob("*.rpm"):
        rpm.rename(repo / rpm.name)
    return repo


@pytest.fixture
def bake_settings(kiln_settings):
    """Settings overlaid by the sandbox (sshd port and user), the way every task gets them."""

    def build(**bake):
        settings = kiln_settings(bake={"chef_solo": str(RECORDING), "smoke_commands": [],
                                       **bake})
        aws = connect(settings)
        # The sandbox overlay sets its own install command; these tests choose theirs.
        settings.bake["chef_install_command"] = bake.get("chef_install_command")
        return settings, aws

    return build


@contextmanager
def bake_instance(settings, aws, key_type: str = "ed25519"):
    """A key pair and an instance in the sandbox's EC2; (SshTarget, the instance's HOME)."""
    ec2 = aws.client("ec2")
    name = f"kiln-provision-test-{uuid.uuid4().hex[:8]}"
    key = ec2.create_key_pair(KeyName=name, KeyType=key_type)
    image = ec2.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["al2023-ami-2023.*"]},
        {"Name": "architecture", "Values": ["x86_64"]}])["Images"][0]["ImageId"]
    instance_id = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName=name,
                                    InstanceType="t3.small")["Instances"][0]["InstanceId"]
    try:
        described = ec2.describe_instances(InstanceIds=[instance_id])
        address = described["Reservations"][0]["Instances"][0]["PublicIpAddress"]
        target = SshTarget(instance_id, address, settings.bake.ssh_port, settings.bake.ssh_user,
                           key["KeyMaterial"])
        yield target, instances.instance_dir(settings.sandbox.state_dir, instance_id) / "home"
    finally:
        ec2.terminate_instances(InstanceIds=[instance_id])
        ec2.delete_key_pair(KeyName=name)


def probe_plan(repo: Path, **changes) -> ProvisionPlan:
    values = {"app": "kiln-probe", "version": "1.4.2", "release": "1", "package": "kiln-probe",
              "service": None, "repo_baseurl": repo.as_uri(),
              "gpgkey_url": (repo / "RPM-GPG-KEY-kiln").as_uri()}
    values.update(changes)
    return ProvisionPlan(**values)


def rpm_query(home: Path, name: str) -> subprocess.CompletedProcess:
    """rpm -q inside the instance (its HOME's .rpmmacros points at the instance's database)."""
    return subprocess.run(["rpm", "-q", name], capture_output=True, text=True,
                          env={"HOME": str(home), "PATH": "/usr/bin:/bin"})


# -- the whole step -------------------------------------------------------------------------------

def test_provision_uploads_runs_chef_and_verifies(bake_settings, probe_repo, capsys):
    settings, aws = bake_settings(sudo=True)
    plan = probe_plan(probe_repo, smoke_commands=("test -f kiln-bake/node.json",))
    with bake_instance(settings, aws, key_type="rsa") as (target, home):
        wait_for_ssh(target, timeout=20)
        result = provision(target, plan, settings)
        staging = home / "kiln-bake"
        record = home / "fake-chef-run"
        assert json.loads((record / "node.json").read_text()) == plan.node()
        assert (record / "solo.rb").read_text() == chef.solo_rb(str(staging))
        argv = json.loads((record / "argv.json").read_text())
        cookbook = staging / "cookbooks/kiln_app"
        assert (cookbook / "metadata.rb").read_bytes() == (
            CHEF_DIR / "cookbooks/kiln_app/metadata.rb").read_bytes()
        assert not (staging / "kiln-chef.tar.gz").exists()
        assert rpm_query(home, "kiln-probe").stdout.strip() == "kiln-probe-1.4.2-1.noarch"

    assert argv == {"argv": ["-c", f"{staging}/solo.rb", "-j", f"{staging}/node.json"],
                    "cwd": str(staging)}
    assert result["instance_id"] == target.instance_id
    assert result["staging_dir"] == str(staging)
    assert result["chef_version"] == "18.5.0"
    assert result["chef_installed"] is False
    assert result["cookbook_digest"] == chef.cookbook_digest(plan.chef_dir)
    assert set(result["timings"]) == {"upload", "chef_check", "chef_run", "verify"}
    err = capsys.readouterr().err
    assert "chef| Starting Chef Infra Client, version 18.5.0 (test fake)" in err
    assert "chef| Chef Infra Client finished, 1/1 resources updated" in err
    assert "verified kiln-probe-1.4.2-1 and 1 smoke check(s)" in err


def test_chef_output_is_streamed_while_it_runs(bake_settings, probe_repo, monkeypatch):
    """The fake waits for a file that only a reader of its live output creates."""
    settings, aws = bake_settings()
    with bake_instance(settings, aws) as (target, home):
        (home / "expect-handshake").touch()
        seen = []

        class Watcher(io.StringIO):
            def write(self, text):
                seen.append(text)
                if text.startswith("chef| waiting for "):
                    Path(text.removeprefix("chef| waiting for ").strip()).touch()
                return len(text)

        monkeypatch.setattr(sys, "stderr", Watcher())
        provision(target, probe_plan(probe_repo), settings)
        monkeypatch.undo()
    lines = [line for line in seen if line.startswith("chef| ")]
    assert lines[:3] == ["chef| Starting Chef Infra Client, version 18.5.0 (test fake)\n",
                         f"chef| waiting for {home / 'go-ahead'}\n", "chef| go-ahead seen\n"]


def test_a_chef_run_past_chef_timeout_is_stopped(bake_settings, probe_repo):
    settings, aws = bake_settings(chef_timeout=2)
    with bake_instance(settings, aws) as (target, home):
        (home / "expect-handshake").touch()  # the fake now waits for a go-ahead nobody gives
        started = time.monotonic()
        with pytest.raises(KilnError) as failure:
            provision(target, probe_plan(probe_repo), settings)
        assert time.monotonic() - started < 12
    assert str(failure.value) == f"chef-solo on {target.where} timed out after 2 s"


def test_failing_chef_stops_the_bake_with_its_exit_code(bake_settings, probe_repo, capsys):
    settings, aws = bake_settings(chef_solo=str(FAILING), chef_version="17.10.0")
    with bake_instance(settings, aws) as (target, home), pytest.raises(KilnError) as failure:
        provision(target, probe_plan(probe_repo), settings)
    assert str(failure.value) == (
        f"chef-solo failed on {target.instance_id} at {target.host}:{target.port} with exit code "
        f"1 (last output: FATAL: Chef::Exceptions::ChildConvergeError: the package is not in "
        f"the repository)")
    err = capsys.readouterr().err
    # stdout and stderr of chef-solo arrive in order, each line prefixed.
    assert ("chef|     [error] No match for argument: kiln-probe-9.9.9-1\n"
            "chef| FATAL: Chef::Exceptions::ChildConvergeError") in err
    assert "has chef 18.5.0, not the pinned kiln.bake.chef_version 17.10.0" in err
    assert "verified" not in err


def test_missing_chef_solo_runs_the_install_command(bake_settings, probe_repo, capsys):
    settings, aws = bake_settings()
    with bake_instance(settings, aws) as (target, home):
        chef_solo = home / "opt/chef/bin/chef-solo"
        settings.bake["chef_solo"] = str(chef_solo)
        settings.bake["chef_install_command"] = (
            f"echo installing chef {{version}} && mkdir -p {chef_solo.parent} && "
            f"cp {RECORDING} {chef_solo}")
        result = provision(target, probe_plan(probe_repo), settings)
        assert chef_solo.is_file()
    assert result["chef_installed"] is True
    assert result["chef_version"] == "18.5.0"
    err = capsys.readouterr().err
    assert "install| installing chef 18.5.0" in err
    assert "chef| Chef Infra Client finished" in err


@pytest.mark.parametrize(("install", "message"), [
    (None, r"chef check: /nonexistent/chef-solo is not on i-\w+ at 127\.0\.0\.1:\d+ \(exit code "
           r"127\) and kiln\.bake\.chef_install_command is not set"),
    ("true", r"chef check: /nonexistent/chef-solo still missing on i-\w+ at \S+ after "
             r"kiln\.bake\.chef_install_command \(exit code 127: "
             r".*(not found|No such file or directory)\)"),
    ("echo no network; exit 6", r"chef install failed on i-\w+ at \S+ with exit code 6 "
                                r"\(last output: no network\)"),
])
def test_chef_solo_that_cannot_be_installed_fails_clearly(bake_settings, probe_repo, install,
                                                          message):
    settings, aws = bake_settings(chef_solo="/nonexistent/chef-solo", chef_install_command=install)
    with bake_instance(settings, aws) as (target, home), pytest.raises(KilnError, match=message):
        provision(target, probe_plan(probe_repo), settings)
    assert not (home / "fake-chef-run").exists()


def test_verification_catches_a_wrong_version(bake_settings, probe_repo):
    settings, aws = bake_settings()
    plan = probe_plan(probe_repo, release="2")
    with bake_instance(settings, aws) as (target, home), pytest.raises(KilnError) as failure:
        provision(target, plan, settings)
    assert str(failure.value) == (f"verify: {target.where} has kiln-probe 1.4.2-1 installed, "
                                  f"expected 1.4.2-2")


def test_verification_reruns_the_smoke_checks(bake_settings, probe_repo):
    settings, aws = bake_settings()
    plan = probe_plan(probe_repo, smoke_commands=("true", "echo no answer on /health >&2; false"))
    with bake_instance(settings, aws) as (target, home), pytest.raises(KilnError) as failure:
        provision(target, plan, settings)
    assert str(failure.value) == (
        f"smoke check failed on {target.where} with exit code 1: "
        f"echo no answer on /health >&2; false (no answer on /health)")


def test_plan_for_release_fills_smoke_commands_from_settings(kiln_settings, probe_repo):
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
        assert "true" in (home.parent / "sessions.log").read_text()


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
                          _fresh_key())
        with pytest.raises(KilnError, match=r"not ready after 1 s \(last error: "
                                            r"AuthenticationException"):
            wait_for_ssh(wrong, timeout=1)


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
