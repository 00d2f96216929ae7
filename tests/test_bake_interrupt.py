"""A real `invoke bake` subprocess sent SIGINT or SIGTERM at each step of the bake: it exits 130
and leaves no temporary resource (counted by tag with each service's describe call) and no
half-made image.

To stop the bake at a precise step, its AWS calls go through tests/faults.py's proxy, which holds
the step's first request (the bake is then waiting inside that call) until the signal is sent.
Steps without an AWS call of their own are caught by their progress line on stderr.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import threading

import pytest
import yaml

from tests.bake_helpers import (
    PROBE,
    PROBE_SETTINGS,
    bootstrapped_sandbox,
    image_count,
    leftovers,
    proxied,
    write_probe_manifest,
)
from tests.conftest import INVOKE, ROOT, deep_merge
from tests.faults import FaultProxy

# A group of its own: it can run on another worker than the other bake tests.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bake-interrupt")]

# step → ("call", AWS action held at the proxy) or ("line", text on stderr)
STEPS = {
    "package": ("line", "bake: step package"),
    "key-pair": ("call", "CreateKeyPair"),
    "security-group": ("call", "CreateSecurityGroup"),
    "launch": ("call", "RunInstances"),
    "running": ("call", "DescribeInstances"),
    "ssh": ("line", "bake: step ssh"),
    "provision": ("line", "chef| "),
    "stop": ("call", "StopInstances"),
    "image": ("call", "CreateImage"),
    "teardown": ("call", "TerminateInstances"),
}
versions = (f"2.0.{n}" for n in itertools.count())


@pytest.fixture(scope="module")
def bake_sandbox(sandbox_box, tmp_path_factory):
    return bootstrapped_sandbox(sandbox_box, tmp_path_factory)


class Watcher:
    """Collects a process's stderr lines; signals an event when a line contains `text`."""

    def __init__(self, stream, text: str | None):
        self.lines: list[str] = []
        self.text = text
        self.seen = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            if self.text and self.text in line:
                self.seen.set()


def _step_signals() -> list:
    """Every step once, SIGINT and SIGTERM in turn (one handler turns both into the same
    exception, provisioner/signals.py); both at teardown, where releases must be shielded."""
    both = (signal.SIGINT, signal.SIGTERM)
    cases = []
    for n, step in enumerate(STEPS):
        for signum in both if step == "teardown" else (both[n % 2],):
            cases.append(pytest.param(step, signum, id=f"{step}-{signum.name}"))
    return cases


@pytest.mark.parametrize(("step", "signum"), _step_signals())
def test_interrupted_bake_leaves_nothing(bake_sandbox, config_overrides, tmp_path, step, signum):
    kind, trigger = STEPS[step]
    images_before = image_count()
    with FaultProxy(bake_sandbox.endpoint) as proxy:
        hold = proxy.hold(trigger) if kind == "call" else None
        overrides, env = proxied(bake_sandbox, proxy.url)
        runtime = tmp_path / "kiln-test.yaml"
        config = deep_merge(deep_merge(config_overrides, PROBE_SETTINGS), overrides)
        runtime.write_text(yaml.safe_dump({"kiln": config}))
        process = subprocess.Popen(
            [INVOKE, "-f", str(runtime), "bake", "--version", next(versions), "--share", "",
             "--manifest", write_probe_manifest(tmp_path)],
            cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        watcher = Watcher(process.stderr, None if hold else trigger)
        try:
            reached = (hold.arrived if hold else watcher.seen).wait(120)
            assert reached, "\n".join(watcher.lines)
            process.send_signal(signum)
            if hold:
                hold.release()
            process.wait(180)
        finally:
            if process.poll() is None:
                process.kill()
        watcher.thread.join(10)
    log = "\n".join(watcher.lines)
    assert process.returncode == 130, log
    assert watcher.lines[-1] == "kiln: interrupted", log
    assert leftovers(app=PROBE) == {}, log
    # The image is deregistered unless it was complete (interrupted while tearing down).
    assert image_count() == images_before + (1 if step == "teardown" else 0), log
