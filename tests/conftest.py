"""Shared fixtures: every test talks to a real moto server over HTTP, started per test worker.

`sandbox_box` is one sandbox (moto server) for the whole session of a worker; `clean_sandbox`
resets it before a test that needs an empty AWS. `kiln_settings(...)` builds validated settings
from the project's invoke.yaml with overrides; `run_invoke(...)` runs the real `invoke` CLI in a
subprocess against the same sandbox.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cloud import settings as settings_module
from cloud.apps import merge
from sandbox.control import Sandbox

# The deploy tests' fixtures (kaws, daws, outputs), the load balancer tests' (apps, lb) and the
# machine tests' (host_with_history) live beside their helpers.
pytest_plugins = ["tests.deploy_helpers", "tests.network_helpers", "tests.host_helpers"]

ROOT = Path(__file__).resolve().parent.parent
INVOKE = str(Path(sys.executable).with_name("invoke"))
# The real chef-solo and fpm beside this checkout, as `make test` puts them on PATH.
VENDOR = ROOT.parent / "shared" / "vendor"
for _tool in ("chef", "fpm"):
    if (VENDOR / _tool / "bin").is_dir() and str(VENDOR / _tool / "bin") not in os.environ["PATH"]:
        os.environ["PATH"] = f"{VENDOR / _tool / 'bin'}{os.pathsep}{os.environ['PATH']}"


deep_merge = merge  # settings over settings, as kiln.apps entries over the defaults


def project_config() -> dict:
    return yaml.safe_load((ROOT / "invoke.yaml").read_text())["kiln"]


@pytest.fixture(scope="session", autouse=True)
def base_layer_cache(tmp_path_factory):
    """One folder for the run's sandbox base layers (sandbox/machines/image.py): each fresh state
    dir links the layer built once, instead of building its own (seconds each). Both workers of
    an xdist run share the run's folder; a run of its own has its own."""
    from sandbox.machines.image import CACHE_ENV

    run = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run = run.parent  # pytest-N, above this worker's popen-gwN
    saved = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(run / "base-layers")
    yield
    if saved is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = saved


@pytest.fixture(scope="session")
def sandbox_box(tmp_path_factory):
    # The shared sandbox refuses what IAM refuses, as `invoke sandbox.up` does.
    os.environ.setdefault("KILN_SANDBOX_IAM", "enforce")
    # Its state lives as long as the session: no snapshots (tests/test_sandbox_crash.py keeps
    # a sandbox's state across a crash in one of its own).
    box = Sandbox(tmp_path_factory.mktemp("sandbox"), keep_state=False)
    box.up()
    # Tests set things up as the sandbox's admin; Kiln's tasks sign as its operator.
    saved = {k: os.environ.get(k) for k in box.env("admin")}
    os.environ.update(box.env("admin"))
    wait_for_new_templates(box)
    yield box
    box.down()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def wait_for_new_templates(box: Sandbox) -> None:
    """Tests' own boto3 clients (boto3.client…) give a new launch template the time Auto Scaling
    takes to know it (sandbox/aws/autoscaling/template_propagation.py) before naming it, as a
    script on AWS would; Kiln's sessions retry instead, and are not slowed."""
    import boto3

    from sandbox import clock
    from sandbox.aws.autoscaling.template_propagation import PROPAGATION

    def wait(params, **_):
        if params.get("LaunchTemplate") or params.get("MixedInstancesPolicy"):
            time.sleep(PROPAGATION * clock.scale_of(box.state_dir) + 0.05)

    events = boto3._get_default_session().events
    for operation in ("CreateAutoScalingGroup", "UpdateAutoScalingGroup"):
        events.register(f"before-parameter-build.autoscaling.{operation}", wait)


@pytest.fixture(scope="session")
def strict_box(tmp_path_factory, sandbox_box):
    """A second sandbox that refuses what IAM refuses (the default outside the test suite), one
    per worker as `sandbox_box` is: its tests reset it (`clean_strict`) or read only what they
    make themselves, and a moto server takes seconds to start."""
    saved = os.environ.get("KILN_SANDBOX_IAM")
    os.environ["KILN_SANDBOX_IAM"] = "enforce"
    box = Sandbox(tmp_path_factory.mktemp("strict"), keep_state=False)
    try:
        box.up()
    finally:
        os.environ["KILN_SANDBOX_IAM"] = saved or "audit"
    yield box
    box.down()


@pytest.fixture
def clean_strict(strict_box):
    strict_box.reset()
    return strict_box


@pytest.fixture
def clean_sandbox(sandbox_box):
    sandbox_box.reset()
    return sandbox_box


@pytest.fixture
def lived_in(sandbox_box):
    """Accounts that start lived-in (sandbox/aws/lived_in.py) for one test, then new again."""
    sandbox_box.set_account_state("lived-in")
    sandbox_box.reset()
    yield sandbox_box
    sandbox_box.set_account_state("new")


@pytest.fixture
def config_overrides(sandbox_box, tmp_path) -> dict:
    """The overrides every test needs: this worker's sandbox and a private dist/ folder."""
    return {"sandbox": {"state_dir": str(sandbox_box.state_dir)}, "dist": str(tmp_path / "dist")}


@pytest.fixture
def kiln_settings(config_overrides):
    def build(**overrides) -> settings_module.Settings:
        raw = deep_merge(deep_merge(project_config(), config_overrides), overrides)
        return settings_module.validate(raw, ["test config"])

    return build


@pytest.fixture
def aws(kiln_settings):
    from cloud.target import connect

    return connect(kiln_settings())


@pytest.fixture
def admin_aws(kiln_settings):
    """A session as the sandbox's admin, as `invoke bootstrap` has."""
    from cloud.target import connect

    return connect(kiln_settings(), admin=True)


@pytest.fixture
def run_invoke(config_overrides, tmp_path):
    """Run `invoke ARGS…` from the project root with a runtime config for this test."""

    def run(*args: str, overrides: dict | None = None, check: bool = False, timeout: int = 600,
            env: dict | None = None) -> subprocess.CompletedProcess:
        runtime = tmp_path / "kiln-test.yaml"
        config = deep_merge(config_overrides, overrides or {})
        runtime.write_text(yaml.safe_dump({"kiln": config}))
        result = subprocess.run([INVOKE, "-f", str(runtime), *args], cwd=ROOT, text=True,
                                capture_output=True, timeout=timeout,
                                env={**os.environ, **(env or {})})
        if check and result.returncode != 0:
            raise AssertionError(f"invoke {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    return run
