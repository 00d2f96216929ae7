"""Sandbox instances without root: a user with subordinate ids (/etc/subuid, /etc/subgid) and
newuidmap runs the whole sandbox, its instances in a user namespace.

Run as root (CI), the test makes a system user for the run, with a range of subordinate ids,
and removes it after; run as anyone else, it is that user.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_USER = "kiln-rootless-test"
SUBORDINATE = "400000-465535"
PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def rootless_user():
    if os.geteuid() != 0:
        yield pwd.getpwuid(os.getuid())
        return
    subprocess.run(["userdel", TEST_USER], capture_output=True)  # one a killed run left
    # A shell: sshd runs the forced command of a session with it.
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                    "--shell", "/bin/sh", TEST_USER], check=True)
    try:
        subprocess.run(["usermod", "--add-subuids", SUBORDINATE, "--add-subgids", SUBORDINATE,
                        TEST_USER], check=True)
        yield pwd.getpwnam(TEST_USER)
    finally:
        subprocess.run(["userdel", TEST_USER], check=False)


def run_as(user, argv: list[str], home: Path) -> subprocess.CompletedProcess:
    prefix = [] if os.geteuid() != 0 else [
        "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
        "--inh-caps=-all"]
    # The system's Python with the project's packages: the venv's interpreter may live where
    # only its owner can reach (a pyenv build under /root, say).
    site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"))
    env = {"PATH": os.environ["PATH"], "HOME": str(home),  # chef-solo on it, as for root
           "LANG": "C.UTF-8", "PYTHONPATH": f"{ROOT}:{site}"}
    return subprocess.run([*prefix, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_user_without_root_runs_instances_that_look_like_amazon_linux(rootless_user):
    home = Path(tempfile.mkdtemp(prefix="kiln-rootless-"))
    os.chown(home, rootless_user.pw_uid, rootless_user.pw_gid)
    try:
        done = run_as(rootless_user, [PYTHON, "tests/rootless_probe.py",
                                      str(home / "sandbox")], home)
        assert done.returncode == 0, done.stderr[-3000:]
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        assert seen["os"][:2] == [0, "amzn 2023"], seen
        assert seen["user"][:2] == [0, "ec2-user\n1000"], seen
        assert seen["root"][:2] == [0, "0"], seen
        assert seen["write"][:2] == [0, "ec2-user\nkept"], seen
        assert seen["repo"][1] in ("200", "403"), seen  # the sandbox's endpoint answers
        assert seen["chef"][0] == 0 and "Chef" in seen["chef"][1], seen
        assert seen["host"][:2] == [0, "programs\nec2-user"], seen
        assert seen["package"][:2] == [0, "probe 640"], seen
        assert seen["converge"][:2] == [0, "web\n" + seen["converge"][1].split()[-1]], seen
        assert seen["converge"][1].split()[-1].startswith("ip-"), seen
        assert seen["machines_mode"] == "0o700"  # its setuid sudo is the user's: none may use it
        assert seen["balanced"] == ["healthy", 200, seen["converge"][1].split()[-1] + "\n"], seen
        # Every process the sandbox started has ended (a zombie waits only for its reaper).
        listed = subprocess.run(["ps", "-o", "stat=,args=", "-u", str(rootless_user.pw_uid)],
                                capture_output=True, text=True).stdout.splitlines()
        assert [line for line in listed if not line.startswith("Z")] == []
    finally:
        subprocess.run(["pkill", "-KILL", "-u", str(rootless_user.pw_uid)], check=False)
        cleanup = run_as(rootless_user, [PYTHON, "-m", "sandbox.userns", "rm",
                                         str(home)], home)
        shutil.rmtree(home, ignore_errors=True)
        assert cleanup.returncode == 0 or not home.exists(), cleanup.stderr


def test_a_user_without_subordinate_ids_is_told_what_is_missing_in_one_line(tmp_path):
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() != 0:
        pytest.skip("needs root to run as nobody")  # CI runs as root
    done = run_as(nobody, [PYTHON, "-c", "from sandbox import userns\n"
                           "from cloud.errors import KilnError\n"
                           "try:\n    userns.spawn(['true'])\n"
                           "except KilnError as error:\n    print(error)"], tmp_path)
    assert done.stdout.strip().splitlines() == [
        "sandbox: nobody has no 65536 subordinate uids in /etc/subuid, which instances without "
        "root need (usermod --add-subuids START-END nobody, as root), or run the sandbox as root"]
