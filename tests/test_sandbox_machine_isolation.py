"""No local user reaches into a sandbox machine from the host: not through an image's layers
(their setuid files, their world-writable /var/tmp), not through an instance's writable layer
(a bake's staging dir in ec2-user's home), whatever the modes inside them."""

from __future__ import annotations

import ctypes
import errno
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from sandbox import userns
from sandbox.machines import confine, image, images
from sandbox.machines import instances as machines

INSTANCE = "i-0000000000000150"
NOBODY = 65534
EC2_USER = image.EC2_USER[1]  # the host's uid of the same number: a person, on most hosts


def as_user(uid: int, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           "sh", "-c", command], capture_output=True, text=True, timeout=30)


@pytest.fixture
def state(var_tmp_state):
    """A state dir every local user can reach (a checkout's .sandbox, say)."""
    if os.geteuid() != 0:
        pytest.skip("running as other users needs root")  # CI runs as root
    return var_tmp_state


def test_no_local_user_reaches_an_images_layers_or_an_instances_own(state):
    machines.launch(state, INSTANCE, "10.0.0.9")
    enter = machines.enter_command(state, INSTANCE)
    # What an app's package may do (a setuid file), and what every bake does (its staging dir).
    made = subprocess.run([*enter, "sh", "-c",
                           "sudo -n install -m 4755 /usr/bin/id /usr/local/bin/kiln-id && "
                           "sudo -n touch /var/tmp/kiln-scratch && mkdir ~/kiln-bake"],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    [top] = images.capture(state, "ami-0000000000000150", INSTANCE,
                           machines.upper(state, INSTANCE))
    layer = images.layers_dir(state) / top
    assert (layer / "usr/local/bin/kiln-id").stat().st_mode & 0o4000
    machines_dir = state / "machines"
    assert {oct(path.stat().st_mode & 0o777) for path in (
        machines_dir, images.layers_dir(state), layer, image.layer_dir(state))} == {"0o700"}
    # A setuid file of a layer runs as root for nobody on the host.
    ran = as_user(NOBODY, f"{layer}/usr/local/bin/kiln-id -u")
    assert ran.returncode != 0 and ran.stdout.strip() != "0"
    # The layers' world-writable /var/tmp is every instance's of the image.
    for var_tmp in (layer / "var/tmp", image.layer_dir(state) / "var/tmp"):
        assert as_user(NOBODY, f"touch {var_tmp}/from-the-host").returncode != 0
    # The host's user of ec2-user's uid does not write into a bake's staging dir.
    staging = machines.upper(state, INSTANCE) / "home/ec2-user/kiln-bake"
    assert staging.is_dir()
    assert as_user(EC2_USER, f"echo 'execute \"id\"' >> {staging}/recipe.rb").returncode != 0
    assert not (staging / "recipe.rb").exists()


def _mask(names) -> int:
    return sum(1 << confine.CAPABILITY_NUMBERS[name] for name in names)


def _status(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def test_instance_processes_are_confined_as_a_containers_are(state):
    """Its init, what it starts and a session's root under sudo: a container's capabilities, a
    seccomp filter refusing the kernel's keyrings, handles, mounts and new namespaces, and a
    read-only /proc/sys (no core_pattern to rewrite)."""
    machines.launch(state, INSTANCE, "10.0.0.9")
    init = _status(Path(f"/proc/{machines.init_pid(state, INSTANCE)}/status").read_text())
    kept = _mask(confine.KEPT_CAPABILITIES)
    assert (int(init["CapBnd"], 16), int(init["CapEff"], 16)) == (kept, kept)
    assert init["Seccomp"].strip() == "2"
    numbers = ctypes.CDLL("libseccomp.so.2")
    keyctl, by_handle = (numbers.seccomp_syscall_resolve_name(name) for name in (
        b"keyctl", b"open_by_handle_at"))
    probe = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
             f"print(*[(libc.syscall({keyctl}, 0, 0, 0, 0), ctypes.get_errno()), "
             f"(libc.syscall({by_handle}, 0, 0, 0), ctypes.get_errno())])")
    enter = machines.enter_command(state, INSTANCE)
    script = ("grep -E '^(CapEff|Seccomp):' /proc/self/status; "
              f"python3 -c '{probe}'; "
              "echo core > /proc/sys/kernel/core_pattern || echo refused; "
              "unshare --user --map-root-user true || echo refused; "
              "mount -t tmpfs tmpfs /mnt || echo refused")
    shown = subprocess.run([*enter, "sudo", "-n", "sh", "-c", script], capture_output=True,
                           text=True, timeout=60)
    lines = shown.stdout.splitlines()
    assert _status("\n".join(lines[:2])) == {"CapEff": f"{kept:016x}", "Seccomp": "2"}, shown
    assert lines[2] == f"(-1, {errno.EPERM}) (-1, {errno.EPERM})"
    assert lines[3:] == ["refused"] * 3, shown.stderr
    assert "Read-only file system" in shown.stderr


def test_an_instances_ids_are_its_own_never_the_host_users(state):
    """Its root and its ec2-user are ids of a range of their own on the host: not root, not the
    host's uid 1000, nobody's account."""
    machines.launch(state, INSTANCE, "10.0.0.9")
    enter = machines.enter_command(state, INSTANCE)
    made = subprocess.run([*enter, "sh", "-c", "sudo -n touch /kiln-root-file && "
                           "touch ~/kiln-user-file && id -u && sudo -n id -u"],
                          capture_output=True, text=True, timeout=60)
    assert made.stdout.split() == ["1000", "0"], made.stderr
    root_uid, root_gid = userns.instance_ids()
    upper = machines.upper(state, INSTANCE)
    owners = {(info.st_uid, info.st_gid) for info in (
        os.stat(upper / "kiln-root-file"), os.stat(upper / "home/ec2-user/kiln-user-file"))}
    assert owners == {(root_uid, root_gid), (root_uid + EC2_USER, root_gid + EC2_USER)}
    assert root_uid >= 65536 and root_gid >= 65536
    for uid in (root_uid, root_uid + EC2_USER):
        with pytest.raises(KeyError):
            pwd.getpwuid(uid)
    init = _status(Path(f"/proc/{machines.init_pid(state, INSTANCE)}/status").read_text())
    assert int(init["Uid"].split()[0]) == root_uid
