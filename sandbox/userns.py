"""The sandbox without root: its server, and so its instances, run in a user namespace.

A user who is not root starts the moto server in a user namespace of its own, where the user is
root and uids and gids 1-65536 are the user's subordinate ids (/etc/subuid, /etc/subgid, mapped
by newuidmap and newgidmap from the `uidmap` package): there it may make the instances' mount,
PID and network namespaces, and an instance's ec2-user (1000) and package accounts are real ids.
The host's files appear as owned by nobody there (the host's root is not mapped); see
machines/image.py for what the base image adds because of that.

    spawn(argv, **popen) -> subprocess.Popen    # argv, as root of a new mapped user namespace
    run(argv)                                    # the same, waited for
    inside() -> bool                             # this process is in such a namespace
    instance_ids() -> (uid, gid) | None          # run as root: where an instance's ids lie

Run as root, the sandbox server is not in a user namespace, but each instance is, of its own:
its ids 0-65535 are the host's `instance_ids()` onwards (root's subordinate ids in /etc/subuid
and /etc/subgid, else INSTANCE_IDS), so no instance uid is a host user's: its root is not the
host's root, its ec2-user not the host's uid 1000 (machines/boot.py).

    python -m sandbox.userns rm PATH…            # remove files the instances owned
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

from cloud.errors import KilnError

IDS = 65536  # subordinate ids mapped from 1 on: ec2-user (1000), nobody (65534), the packages'
# Where instances' ids lie on a host whose root has no subordinate ids: above the range
# systemd-nspawn picks container ids from, far from any account's.
INSTANCE_IDS = 0x70000000


def needed() -> bool:
    return os.geteuid() != 0


def inside() -> bool:
    """In a user namespace other than the host's (whose map is the whole id range)."""
    first = Path("/proc/self/uid_map").read_text().split()
    return first[:3] != ["0", "0", "4294967295"]


def instance_ids() -> tuple[int, int] | None:
    """Run as root: the host uid and gid of an instance's root (its 65536 ids follow). None
    without root, where instances share the server's namespace and its subordinate ids."""
    if needed() or inside():
        return None
    found = []
    for kind in ("uid", "gid"):
        try:
            found.append(subordinate(kind)[0])
        except KilnError:
            found.append(INSTANCE_IDS)
    return found[0], found[1]


def subordinate(kind: str) -> tuple[int, int]:
    """The first range of subordinate `kind` ids ("uid", "gid") of this user: (start, count)."""
    user = pwd.getpwuid(os.getuid())
    path = Path(f"/etc/sub{kind}")
    lines = path.read_text().splitlines() if path.is_file() else []
    for line in lines:
        owner, _, rest = line.partition(":")
        start, _, count = rest.partition(":")
        usable = start.isdigit() and count.isdigit() and int(count) >= IDS
        if owner in (user.pw_name, str(user.pw_uid)) and usable:
            return int(start), IDS
    raise KilnError(f"sandbox: {user.pw_name} has no {IDS} subordinate {kind}s in {path}, which "
                    f"instances without root need (usermod --add-sub{kind}s "
                    f"START-END {user.pw_name}, as root), or run the sandbox as root")


def spawn(argv: list[str], **popen) -> subprocess.Popen:
    """Start `argv` in a new user namespace where this user is root and 1-65536 are its
    subordinate ids; its pid is the process's own (unshare and the waiting Python exec it)."""
    for tool in ("newuidmap", "newgidmap"):
        if shutil.which(tool) is None:
            raise KilnError(f"sandbox: {tool} not found: instances without root need it "
                            "(apt-get install uidmap), or run the sandbox as root")
    ranges = {kind: subordinate(kind) for kind in ("uid", "gid")}
    ready, go = os.pipe()
    # It waits until the maps are written, then execs argv as root of the namespace (an exec
    # with a mapped uid 0 gains the namespace's capabilities).
    wait = (f"import os, sys; os.read({ready}, 1); os.close({ready}); "
            "os.execvp(sys.argv[1], sys.argv[1:])")
    process = subprocess.Popen(["unshare", "--user", "--", sys.executable, "-c", wait, *argv],
                               pass_fds=(ready,), **popen)
    os.close(ready)
    try:
        _wait_for_namespace(process)
        for kind, tool, own in (("uid", "newuidmap", os.getuid()), ("gid", "newgidmap",
                                                                    os.getgid())):
            start, count = ranges[kind]
            mapped = subprocess.run([tool, str(process.pid), "0", str(own), "1", "1",
                                     str(start), str(count)], capture_output=True, text=True)
            if mapped.returncode != 0:
                process.kill()
                raise KilnError(f"sandbox: {tool} failed: {mapped.stderr.strip()}")
        os.write(go, b"go\n")
    finally:
        os.close(go)
    return process


def _wait_for_namespace(process: subprocess.Popen) -> None:
    """Until unshare has made the namespace, or say why it could not."""
    own = os.stat("/proc/self/ns/user").st_ino
    for _ in range(500):
        if process.poll() is not None:
            raise KilnError("sandbox: this kernel does not let this user make a user namespace "
                            "(see user.max_user_namespaces and kernel.unprivileged_userns_clone),"
                            " which instances without root need; run the sandbox as root")
        try:
            if os.stat(f"/proc/{process.pid}/ns/user").st_ino != own:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    process.kill()
    raise KilnError("sandbox: unshare --user did not start within 5 s")


def run(argv: list[str]) -> None:
    done = spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, errors = done.communicate()
    if done.returncode != 0:
        raise KilnError(f"sandbox: {argv[0]} failed: {errors.decode(errors='replace').strip()}")


def shift_owners(path: str | Path, uid: int, gid: int) -> None:
    """Every file under `path` (and it) owned `uid`/`gid` ids further (0 → uid, 1000 → uid +
    1000, …), as an instance's namespace shows the host's ids. A chown clears setuid and setgid
    bits: they are set again."""
    for folder, names, files in os.walk(path):
        links = [name for name in names if os.path.islink(os.path.join(folder, name))]
        for item in [folder, *(os.path.join(folder, name) for name in files + links)]:
            info = os.lstat(item)
            os.lchown(item, uid + info.st_uid, gid + info.st_gid)
            if info.st_mode & 0o6000 and not stat.S_ISLNK(info.st_mode):
                os.chmod(item, stat.S_IMODE(info.st_mode))


def remove(path: str | Path) -> None:
    """Remove a folder whose files may belong to an instance's accounts (subordinate ids)."""
    path = Path(path)
    if not path.exists():
        return
    if needed() and not inside():
        run(["rm", "-rf", "--", str(path)])
    else:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["rm"]:
        for target in sys.argv[2:]:
            remove(target)
