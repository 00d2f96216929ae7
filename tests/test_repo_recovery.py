"""The repository after a crash or a lost response: the next command finds it working.

A real `invoke publish` is killed (SIGKILL) at a precise request, held at tests/faults.py's
proxy; a lost response is a request the proxy forwards (AWS applies it) and whose answer it
drops, so botocore retries.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from cloud.target import connect
from packager import repo
from tests.bake_helpers import proxied
from tests.conftest import INVOKE, ROOT, deep_merge
from tests.deploy_helpers import deployer
from tests.faults import FaultProxy
from tests.repo_helpers import fresh_repo, three_rpms

# One worker runs the module (an xdist group): its module-scoped `rpms` is made once.
pytestmark = pytest.mark.xdist_group("repo-recovery")


@pytest.fixture(scope="module")
def rpms(tmp_path_factory):
    return three_rpms(tmp_path_factory.mktemp("rpms"))


@pytest.fixture
def repo_config(admin_aws):
    return fresh_repo(admin_aws, "r")


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """A temporary folder for this test's commands alone: any Kiln command on the host sweeps the
    work folders of dead processes in the shared one, so a killed run's folder could be gone
    before the test looks for it."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def repo_aws(kiln_settings, repo_config):
    return connect(kiln_settings(**repo_config))


def signature_matches(aws) -> bool:
    from packager import signing

    target = repo.Repo.of(aws)
    body, signature = target.get(repo.REPOMD)[0], target.get(f"{repo.REPOMD}.asc")[0]
    return signing.from_settings(aws.settings).verifies(body, signature)


def killed_at(sandbox_box, config_overrides, tmp_path, repo_config, action, *args) -> int:
    """Run `invoke ARGS` through the proxy and kill -9 it once `action` reaches the proxy (the
    held request is then dropped: it never reaches AWS)."""
    with FaultProxy(sandbox_box.endpoint) as proxy:
        overrides, env = proxied(sandbox_box, proxy.url)
        config = tmp_path / "killed.yaml"
        config.write_text(yaml.safe_dump(
            {"kiln": deep_merge(deep_merge(config_overrides, overrides), repo_config)}))
        hold = proxy.hold(action)
        process = subprocess.Popen([INVOKE, "-f", str(config), *args], cwd=ROOT,
                                   env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        try:
            assert hold.arrived.wait(120), f"{action} never came: {process.stderr.read()}"
            os.kill(process.pid, signal.SIGKILL)
            process.wait(30)
        finally:
            hold.drop()
            process.kill()
            process.wait()
    return process.pid


def repomd_put(config: dict, asc: bool = False) -> str:
    return f"PUT /{config['repo']['bucket']}/el9/x86_64/{repo.REPOMD}{'.asc' if asc else ''}"


@pytest.mark.parametrize("follow_up", ["publish", "repo.verify", "repo.prune"])
def test_publish_killed_between_repomd_and_its_signature_is_repaired_by_the_next_command(
        sandbox_box, config_overrides, tmp_path, repo_config, repo_aws, rpms, run_invoke,
        follow_up, private_tmp):
    repo.publish(repo_aws, rpms["alpha"])
    pid = killed_at(sandbox_box, config_overrides, tmp_path, repo_config,
                    repomd_put(repo_config, asc=True), "publish", "--rpm", str(rpms["beta"]))
    assert not signature_matches(repo_aws), "the kill did not land between the two PUTs"
    left = list(private_tmp.glob(f"kiln-publish-{pid}-*"))
    assert left, "the killed publish left no work folder to sweep"
    args = {"publish": ["publish", "--rpm", str(rpms["beta"]), "--json"],
            "repo.verify": ["repo.verify", "--json"],
            "repo.prune": ["repo.prune", "--keep", "1"]}[follow_up]
    result = run_invoke(*args, overrides=repo_config, check=True)
    assert "put back the signature written with it" in result.stderr
    assert signature_matches(repo_aws)
    if follow_up == "publish":
        assert json.loads(result.stdout)["status"] == "unchanged"
    assert [p["name"] for p in repo.list_packages(repo_aws)] == ["alpha", "beta"]
    verified = run_invoke("repo.verify", "--json", overrides=repo_config, check=True)
    assert json.loads(verified.stdout) == {"packages": 2, "signed": True, "repaired": False}
    assert not any(folder.exists() for folder in left)


def test_verify_dry_run_reports_and_changes_nothing(
        sandbox_box, config_overrides, tmp_path, repo_config, repo_aws, rpms, run_invoke):
    repo.publish(repo_aws, rpms["alpha"])
    killed_at(sandbox_box, config_overrides, tmp_path, repo_config,
              repomd_put(repo_config, asc=True), "publish", "--rpm", str(rpms["beta"]))
    checked = run_invoke("repo.verify", "--dry-run", overrides=repo_config)
    assert checked.returncode == 1
    assert checked.stderr.strip().splitlines()[-1].endswith(
        "`invoke repo.verify` puts it back")
    assert not signature_matches(repo_aws)


def test_a_repomd_kiln_did_not_write_is_not_signed_anew(repo_aws, rpms, run_invoke,
                                                        repo_config):
    repo.publish(repo_aws, rpms["alpha"])
    target = repo.Repo.of(repo_aws)
    body = target.get(repo.REPOMD)[0]
    target.put(repo.REPOMD, body.replace(b"<revision>", b"<revision>1"), "application/xml")
    refused = run_invoke("publish", "--rpm", str(rpms["beta"]), overrides=repo_config)
    # Refused before anything is written: the pinned-key check on repomd.xml.asc stops it
    # (earlier than the recovery's own "was not written by Kiln" check).
    assert refused.returncode == 1
    errors = [line for line in refused.stderr.splitlines() if line.startswith("kiln: ")]
    assert len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "nothing was written" in errors[0]
    assert not signature_matches(repo_aws)
    assert target.head("Packages/beta-1.0.0-1.noarch.rpm") is None


def test_lost_response_to_the_repomd_put_still_finishes_the_publish(
        sandbox_box, kiln_settings, repo_config, repo_aws, rpms, monkeypatch):
    repo.publish(repo_aws, rpms["alpha"])
    with FaultProxy(sandbox_box.endpoint) as proxy:
        overrides, env = proxied(sandbox_box, proxy.url)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        aws = connect(kiln_settings(**deep_merge(overrides, repo_config)))
        proxy.lose(repomd_put(repo_config))
        result = repo.publish(aws, rpms["beta"])
        assert proxy.lost == [repomd_put(repo_config)]
    assert result["status"] == "published"
    assert [p["name"] for p in repo.list_packages(repo_aws)] == ["alpha", "beta"]
    assert repo.Repo.of(repo_aws).head("Packages/beta-1.0.0-1.noarch.rpm") is not None
    assert signature_matches(repo_aws)
    assert repo.publish(repo_aws, rpms["beta"])["status"] == "unchanged"


def test_someone_elses_repomd_write_is_still_refused(repo_aws, rpms, monkeypatch):
    repo.publish(repo_aws, rpms["alpha"])
    target = repo.Repo.of(repo_aws)
    real_fetch = repo.Repo.fetch_metadata

    def fetch_then_overwritten(self, tree, types=None):
        meta = real_fetch(self, tree, types)
        if meta is not None:  # another writer (a lease that expired) changes it meanwhile
            target.put(repo.REPOMD, meta.repomd + b"\n", "application/xml",
                       Metadata={repo.SIGNATURE_META: "x"})
        return meta

    monkeypatch.setattr(repo.Repo, "fetch_metadata", fetch_then_overwritten)
    with pytest.raises(Exception, match="changed while Kiln held the repo lock"):
        repo.publish(repo_aws, rpms["beta"])


def test_a_package_a_killed_publish_left_unlisted_is_swept_by_the_janitor_once_old(
        sandbox_box, config_overrides, tmp_path, repo_config, repo_aws, rpms, run_invoke):
    """Killed after its upload, before repomd.xml listed it: the object is nobody's. The janitor
    leaves it while a publish might still list it (younger than the cutoff, or the repo lease
    held), then removes it and says so."""
    deployer(repo_aws.settings)  # the janitor sweeps prod too
    repo.publish(repo_aws, rpms["alpha"])
    killed_at(sandbox_box, config_overrides, tmp_path, repo_config, repomd_put(repo_config),
              "publish", "--rpm", str(rpms["beta"]))
    target, beta = repo.Repo.of(repo_aws), "Packages/beta-1.0.0-1.noarch.rpm"
    assert target.head(beta) is not None, "the kill came before the package was uploaded"
    assert [p["name"] for p in repo.list_packages(repo_aws)] == ["alpha"]

    young = run_invoke("janitor", overrides=repo_config, check=True)
    assert target.head(beta) is not None
    assert "leaving 1 package object(s) no metadata lists yet" in young.stderr

    aged = deep_merge(repo_config, {"repo": {"unlisted_grace_seconds": 0, "lock_timeout": 1}})
    with target.lease():  # a publish at work
        busy = run_invoke("janitor", overrides=aged, check=True)
    assert target.head(beta) is not None
    assert "the repo lease is held (repo/" in busy.stderr

    swept = run_invoke("janitor", "--json", overrides=aged, check=True)
    assert target.head(beta) is None
    assert f"janitor: removing package {beta}" in swept.stderr
    assert [(i["kind"], i["id"]) for i in json.loads(swept.stdout)["leftovers"]
            if i["kind"] == "package"] == [("package", beta)]
    assert target.head("Packages/alpha-1.0.0-1.noarch.rpm") is not None
    assert json.loads(run_invoke("repo.verify", "--json", overrides=repo_config,
                                 check=True).stdout)["packages"] == 1
    again = run_invoke("publish", "--rpm", str(rpms["beta"]), "--json", overrides=repo_config,
                       check=True)
    assert json.loads(again.stdout)["status"] == "published"


def test_a_publish_whose_upload_was_swept_while_it_waited_for_the_lease_puts_it_back(
        repo_config, repo_aws, rpms, run_invoke, tmp_path, config_overrides):
    """The janitor deletes under the repo lease; a publish that uploaded (or found an old upload)
    before it had the lease must not list an object that is gone by then."""
    repo.publish(repo_aws, rpms["alpha"])
    target, beta = repo.Repo.of(repo_aws), "Packages/beta-1.0.0-1.noarch.rpm"
    config = tmp_path / "waiting.yaml"
    config.write_text(yaml.safe_dump({"kiln": deep_merge(config_overrides, repo_config)}))
    with target.lease():  # the janitor, at work
        publish = subprocess.Popen([INVOKE, "-f", str(config), "publish", "--rpm",
                                    str(rpms["beta"])], cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while target.head(beta) is None and publish.poll() is None:
            assert time.monotonic() < deadline, "the publish never uploaded its package"
            time.sleep(0.2)
        target.delete([beta])  # swept as unlisted
    assert publish.wait(120) == 0, publish.stderr.read()
    assert target.head(beta) is not None
    assert json.loads(run_invoke("repo.verify", "--json", overrides=repo_config,
                                 check=True).stdout)["packages"] == 2
