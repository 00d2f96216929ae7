"""Waits a person can follow: the watch's checks, its end, and no watch step for --watch 0."""

import subprocess

import pytest

from cloud.target import connect
from orchestrator import operations
from tests.conftest import INVOKE, ROOT, deep_merge
from tests.deploy_helpers import FAST, NO_TRAFFIC, deployer, env_stack, make_image

QUICK = deep_merge(deep_merge(FAST, NO_TRAFFIC), {"deploy": {"steps": "100"}})
# Nothing sends the canary requests here: these watches pass only because they are told to.
UNJUDGED = deep_merge(QUICK, {"deploy": {"canary": {"judge": {"no_verdict": "pass",
                                                              "max_wait": "1s"}}}})


@pytest.fixture
def deploy_overrides():
    return QUICK


def test_watch_zero_leaves_the_watch_step_out(kaws, daws, outputs):
    for version in ("1.0.0", "1.1.0"):
        make_image(daws, version)
    operations.deploy(kaws, version="1.0.0")
    planned = operations.canary(kaws, 10, version="1.1.0", watch="0", dry_run=True)
    assert [s["action"] for s in planned["plan"]["steps"]] == [
        "create", "weights", "wait_healthy", "weights"]
    watched = operations.deploy(kaws, version="1.1.0", steps="50,100", watch="3s", dry_run=True)
    assert [s["action"] for s in watched["plan"]["steps"]].count("watch") == 1


def test_the_sandbox_watches_for_seconds_unless_told_otherwise(kiln_settings):
    assert connect(kiln_settings()).settings.deploy.watch == "10s"
    assert connect(kiln_settings(deploy={"watch": "2s"})).settings.deploy.watch == "2s"


def test_a_watch_in_a_log_is_a_line_per_check_ending_watch_passed(run_invoke, clean_sandbox,
                                                                  kiln_settings):
    daws = deployer(kiln_settings())
    env_stack(daws)
    make_image(daws, "1.0.0")
    make_image(daws, "1.1.0")
    run_invoke("deploy", "--version", "1.0.0", overrides=UNJUDGED, check=True)
    done = run_invoke("canary", "-p", "10", "-v", "1.1.0", "-w", "3s", overrides=UNJUDGED,
                      check=True)
    lines = done.stderr.splitlines()
    checks = [line for line in lines if line.startswith("watch check ")]
    assert checks and "left: kiln-env-hello-web-target-5xx OK, " in checks[0], lines
    assert "hello-web-v002 1/1 healthy" in checks[-1]
    # The watch's last line; the canary's judgement may be printed after it.
    passed = [n for n, line in enumerate(lines) if line.startswith("watch passed: ")]
    assert passed and passed[-1] > lines.index(checks[-1]), lines
    assert any("passed anyway, as kiln.deploy.canary.judge.no_verdict: pass says" in line
               for line in lines), lines


def test_a_watch_on_a_terminal_is_a_countdown(run_invoke, clean_sandbox, kiln_settings, tmp_path):
    daws = deployer(kiln_settings())
    env_stack(daws)
    make_image(daws, "1.0.0")
    make_image(daws, "1.1.0")
    run_invoke("deploy", "--version", "1.0.0", overrides=UNJUDGED, check=True)
    # util-linux `script` gives invoke a terminal; the transcript keeps what was drawn on it.
    transcript = tmp_path / "terminal.log"
    command = f"{INVOKE} -f {tmp_path / 'kiln-test.yaml'} canary -p 10 -v 1.1.0 -w 3s"
    result = subprocess.run(["script", "-qec", command, str(transcript)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    drawn = transcript.read_text(errors="replace")
    assert result.returncode == 0, drawn
    assert "watch 2s left: kiln-env-hello-web-target-5xx OK" in drawn or (
        "watch 3s left: kiln-env-hello-web-target-5xx OK" in drawn), drawn
    assert "watch check " not in drawn and "watch passed: " in drawn


def test_a_canary_watch_without_a_verdict_fails_and_rolls_back(kaws, daws, outputs):
    """No traffic at all (0 of the 20 requests a verdict needs): no evidence is not a pass."""
    for version in ("1.0.0", "1.1.0"):
        make_image(daws, version)
    operations.deploy(kaws, version="1.0.0")
    with pytest.raises(operations.RolledBack) as failed:
        operations.canary(kaws, 10, version="1.1.0", watch="2s")
    assert "no verdict" in str(failed.value), failed.value
    assert "0 of the 20 requests" in str(failed.value)
    groups = {g["name"]: g for g in operations.status(kaws)["server_groups"]}
    assert groups["hello-web-v002"]["state"] == "failed"
    assert groups["hello-web-v001"]["weight"] == 100
    assert failed.value.result["judgement"]["verdict"] == "waiting"
