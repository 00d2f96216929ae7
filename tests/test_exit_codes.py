"""Exit codes a CI can act on (docs/pipeline.md): 3 rolled back by its gate, 4 refused (input,
lock), 130 interrupted (SIGINT, or SIGTERM as a CI cancels) with what it left printed."""

from __future__ import annotations

import signal
import subprocess
import threading

import pytest
import yaml

from cloud import locks
from cloud.errors import EXIT_INTERRUPTED, EXIT_REFUSED, EXIT_ROLLED_BACK
from cloud.target import connect
from orchestrator import environment, operations
from tests.conftest import INVOKE, ROOT, deep_merge
from tests.deploy_helpers import FAST, NO_TRAFFIC, deployer, env_stack, make_image

QUICK = deep_merge(FAST, {"deploy": {"steps": "100"}})


@pytest.fixture
def cluster(clean_sandbox, kiln_settings, run_invoke):
    """hello-web-v001 (1.0.0) serving; image 1.1.0 ready for a canary."""
    daws = deployer(kiln_settings())
    env_stack(daws)
    make_image(daws, "1.0.0")
    make_image(daws, "1.1.0")
    run_invoke("deploy", "--version", "1.0.0", overrides=QUICK, check=True)
    return daws


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_bad_input_is_refused(run_invoke, cluster):
    bad = run_invoke("canary", "--percent", "150", "--version", "1.1.0", overrides=QUICK)
    assert bad.returncode == EXIT_REFUSED, bad.stderr
    missing = run_invoke("ami.promote", "--version", "1.0.0")
    assert missing.returncode == EXIT_REFUSED
    config = run_invoke("status", env={"INVOKE_KILN_DEPLOY_WACTH": "1s"})
    assert config.returncode == EXIT_REFUSED


def test_a_held_lock_is_refused(run_invoke, cluster, kiln_settings):
    aws = connect(kiln_settings(**QUICK))
    env = environment.load(aws)
    with locks.lease(env.aws, env.lock_table, f"cluster/{env.cluster}", "someone else",
                     region=env.region):
        held = run_invoke("rollback", overrides=QUICK)
    assert held.returncode == EXIT_REFUSED, held.stderr
    assert "someone else" in last_line(held)


def test_a_canary_its_gate_rolled_back_exits_3(run_invoke, cluster):
    # Nothing sends it requests: no verdict, and no verdict fails (judge.no_verdict).
    result = run_invoke("canary", "-p", "10", "-v", "1.1.0", "-w", "1s",
                        overrides=deep_merge(QUICK, NO_TRAFFIC))
    assert result.returncode == EXIT_ROLLED_BACK, result.stderr
    assert "rolled back" in last_line(result) and "no verdict" in last_line(result)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_cancelled_canary_says_what_it_left_and_what_finishes_or_undoes_it(
        run_invoke, cluster, config_overrides, tmp_path, kiln_settings, signum):
    runtime = tmp_path / "kiln-test.yaml"
    runtime.write_text(yaml.safe_dump({"kiln": deep_merge(config_overrides, QUICK)}))
    process = subprocess.Popen([INVOKE, "-f", str(runtime), "canary", "-p", "10", "-v", "1.1.0",
                                "-w", "60s"], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    lines, watching = [], threading.Event()

    def read():
        for line in process.stderr:
            lines.append(line.rstrip("\n"))
            if line.startswith("watch check "):
                watching.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert watching.wait(120), "\n".join(lines)
        process.send_signal(signum)
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(10)
    log = "\n".join(lines)
    assert process.returncode == EXIT_INTERRUPTED, log
    assert "canary interrupted in step [5/5] watch alarms and health for 1m; steps 1-4 were done" \
        in lines, log
    assert any(line.startswith("  hello-web-v002  1.1.0") and "10%" in line and "canary" in line
               for line in lines), log
    assert "to finish: `invoke promote --app hello-web`" in lines, log
    assert "to undo: `invoke rollback --app hello-web`" in lines, log
    assert lines[-1] == "kiln: interrupted", log
    # The lock went with it, and the printed command undoes the canary.
    run_invoke("rollback", "--app", "hello-web", overrides=QUICK, check=True)
    groups = {g["name"]: g for g in operations.status(
        connect(kiln_settings(**QUICK)))["server_groups"]}
    assert groups["hello-web-v002"]["state"] == "rolled-back"
    assert groups["hello-web-v001"]["weight"] == 100
