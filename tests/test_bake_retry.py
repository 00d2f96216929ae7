"""A bake that fails after publishing its RPM does not block its own retry: the same manifest
reuses the published package; other files need a new iteration, which the command line gives.
The app's port (kiln.deploy.port) is what the default smoke check asks."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.bake_helpers import bootstrap, images, leftovers
from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bake-retry")]

FAST_SMOKE = {"bake": {"smoke_retries": 1, "smoke_retry_delay": 1}}


def app_on_port(folder, port: int, greeting: str = "Hello") -> str:
    """The example app's manifest and files, its config listening on `port`."""
    shutil.copy(ROOT / "manifests" / "hello-web.yaml", folder / "hello-web.yaml")
    shutil.copytree(ROOT / "manifests" / "hello-web", folder / "hello-web", dirs_exist_ok=True)
    conf = folder / "hello-web" / "hello-web.conf"
    conf.write_text(f"[server]\nhost = 0.0.0.0\nport = {port}\ngreeting = {greeting}\n")
    return str(folder / "hello-web.yaml")


def test_a_bake_failed_after_publishing_is_retried_with_the_same_package_or_a_new_iteration(
        clean_sandbox, run_invoke, tmp_path):
    bootstrap(run_invoke)
    manifest = app_on_port(tmp_path, 9090)

    # The app listens on 9090; the smoke check asks kiln.deploy.port, 8080 by default.
    failed = run_invoke("bake", "--version", "1.0.0", "--manifest", manifest, "--json",
                        overrides=FAST_SMOKE)
    assert failed.returncode != 0
    assert "127.0.0.1:8080/health" in failed.stderr and "published hello-web-1.0.0-1" in \
        failed.stderr
    assert images() == [] and leftovers() == {}

    port = {**FAST_SMOKE, "deploy": {"port": 9090}}
    retried = run_invoke("bake", "--version", "1.0.0", "--manifest", manifest, "--json",
                         overrides=port)
    assert retried.returncode == 0, retried.stderr
    record = json.loads(retried.stdout)
    assert record["rpm"]["action"] == "reused" and record["release"] == "1"
    assert "127.0.0.1:9090/health" in retried.stderr

    # Other files under the same version-release: refused, naming the flag that gets past it.
    app_on_port(tmp_path, 9090, greeting="Hello again")
    refused = run_invoke("bake", "--version", "1.0.0", "--manifest", manifest, overrides=port)
    assert refused.returncode != 0
    assert "built from another manifest or other files" in refused.stderr
    assert "bump the version, or the iteration (--iteration 2)" in refused.stderr

    bumped = run_invoke("bake", "--version", "1.0.0", "--iteration", "2", "--manifest",
                        manifest, "--json", overrides=port)
    assert bumped.returncode == 0, bumped.stderr
    second = json.loads(bumped.stdout)
    assert second["release"] == "2" and second["rpm"]["nevra"] == "hello-web-1.0.0-2.noarch"
    assert second["rpm"]["action"] == "published" and second["image_id"] != record["image_id"]
    assert len(images()) == 2 and leftovers() == {}


def test_package_takes_the_iteration_from_the_command_line(run_invoke, tmp_path):
    built = run_invoke("package", "--iteration", "7", "--json", check=True)
    assert json.loads(built.stdout)["nevra"] == "hello-web-1.0.0-7.noarch"
    bad = run_invoke("package", "--iteration", "07")
    assert bad.returncode != 0 and "--iteration: '07' is not a valid release" in bad.stderr
