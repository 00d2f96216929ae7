"""After a reboot the pids the sandbox wrote down name other processes: `sandbox.down` and
`sandbox.up` must leave those alone (sandbox/process_identity.py), not signal, kill or enter
them because they carry the same number or the same name (a user's own `systemd --user` is
named like an instance's init)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.control import Sandbox
from sandbox.machines import instances as machines
from tests.network_helpers import until

INSTANCE = "i-0123456789abcdef0"
EARLIER_BOOT = "00000000-0000-0000-0000-000000000000:1234"


@pytest.fixture
def bystander():
    """A process started after the reboot, in its own session, named like an instance's init."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import ctypes, time; "
         "ctypes.CDLL(None).prctl(15, b'systemd', 0, 0, 0); time.sleep(300)"],
        start_new_session=True)

    def renamed():
        assert Path(f"/proc/{process.pid}/comm").read_text().strip() == "systemd"

    until(renamed, timeout=10)
    yield process
    process.kill()
    process.wait()


def recorded_before_the_reboot(state_dir: Path, pid: int) -> None:
    """What the last boot left: the server's pid files and an instance's record, all naming
    `pid`, with the identities of processes of an earlier boot."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "moto.pid").write_text(f"{pid}\n")
    (state_dir / "moto.identity").write_text(f"{EARLIER_BOOT}\n")
    world = machines.instance_dir(state_dir, INSTANCE)
    world.mkdir(parents=True)
    keys = ("starter_pid", "init_pid")
    (world / "instance.json").write_text(json.dumps({
        "address": "10.0.0.5", **{key: pid for key in keys},
        "names": {"starter_pid": "systemd", "init_pid": "systemd"},
        "identities": {key: EARLIER_BOOT for key in keys}}))


def test_down_after_a_reboot_leaves_the_processes_that_got_the_recorded_pids(tmp_path,
                                                                            bystander):
    recorded_before_the_reboot(tmp_path / "state", bystander.pid)
    box = Sandbox(tmp_path / "state")
    assert not machines.running(box.state_dir, INSTANCE)
    assert box.down() is False
    machines.terminate_all(box.state_dir)
    assert bystander.poll() is None
    assert not (box.state_dir / "moto.pid").exists()
