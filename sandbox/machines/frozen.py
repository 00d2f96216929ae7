"""Image layers, frozen: read-only, nosuid, nodev mounts of themselves in the sandbox's own mount
namespace.

The sandbox server makes a mount namespace of its own when it starts (`own_namespace`; without
root, in the user namespace it runs in, whose root the user is), and every process it starts
lives in it or in a copy of it: the instances (whose namespaces are copies made at launch), their
ways out, the load balancers' process. Once a layer is written (the base image built, an image
registered), it is bind-mounted onto itself there, read-only, nosuid and nodev: no process of the
sandbox, root or the layer's owner included, writes into it or changes a mode in it, and a setuid
file in it runs with the caller's ids, not its owner's. An instance's root is an overlay of its
own over those mounts, so its own setuid files (sudo) work as on AWS.

The mounts belong to the namespace and go with its last process: a killed sandbox leaves nothing
mounted, its state dir can be removed, and the host's mount table is never changed. On the host
(outside the namespace) the layers stay plain folders of their owner (root, or the user of a
sandbox without root), private to it (0700: images.py).

    own_namespace()          # in the server, first: this process's own mount namespace
    freeze(path) -> bool     # the layer frozen here; False outside the sandbox's namespace
    thaw(path)               # before a layer is removed (a deregistered image's, a rebuilt base)
    thaw_under(folder)       # every frozen layer under `folder`
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_SLAVE = 32, 4096, 16384, 1 << 19
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
MS_NOSYMFOLLOW, ST_NOSYMFOLLOW = 256, 8192  # Linux 5.10; Python's os does not name them
MNT_DETACH = 2
# What a mount already has that a bind remount must keep (without root, the host's mounts'
# flags are locked: dropping one is refused), from statvfs's flags to mount's.
KEPT = {os.ST_NOEXEC: MS_NOEXEC, os.ST_NOATIME: MS_NOATIME, os.ST_NODIRATIME: MS_NODIRATIME,
        os.ST_RELATIME: MS_RELATIME, ST_NOSYMFOLLOW: MS_NOSYMFOLLOW}
FROZEN = MS_RDONLY | MS_NOSUID | MS_NODEV

_namespace: str | None = None  # the sandbox's mount namespace, once this process made it


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                           ctypes.c_void_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def own_namespace() -> None:
    """Move this process, while it is its only thread, into a mount namespace of its own whose
    mounts receive the host's changes and send none back (slave)."""
    global _namespace
    if len(os.listdir("/proc/self/task")) != 1:
        raise OSError(errno.EBUSY, "a mount namespace is made before any thread starts")
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS), "unshare of a mount namespace")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None), "mount --make-rslave /")
    _namespace = os.readlink("/proc/self/ns/mnt")


def inside() -> bool:
    """Whether this process is in the namespace it made (never the host's, nor a test's)."""
    return _namespace is not None and os.readlink("/proc/self/ns/mnt") == _namespace


def freeze(path: str | Path) -> bool:
    """Bind `path` onto itself read-only, nosuid, nodev (once); False outside the sandbox's
    namespace, where nothing is mounted."""
    if not inside():
        return False
    target = os.fsencode(Path(path).resolve())
    if os.fsdecode(target) in _mount_points():
        return True
    libc = _libc()
    _check(libc.mount(target, target, None, MS_BIND, None), f"bind of {path}")
    kept = os.statvfs(target).f_flag
    flags = MS_REMOUNT | MS_BIND | FROZEN
    flags |= sum(flag for st, flag in KEPT.items() if kept & st)
    if not kept & (os.ST_NOATIME | os.ST_RELATIME):
        flags |= MS_STRICTATIME  # else a remount means relatime
    try:
        _check(libc.mount(None, target, None, flags, None), f"read-only remount of {path}")
    except OSError:
        libc.umount2(target, MNT_DETACH)
        raise
    return True


def thaw(path: str | Path) -> None:
    """Unmount `path`'s frozen mounts, so that it may be removed or replaced."""
    if not inside():
        return
    target = str(Path(path).resolve())
    libc = _libc()
    while target in _mount_points():
        _check(libc.umount2(os.fsencode(target), MNT_DETACH), f"unmount of {path}")


def thaw_under(folder: str | Path) -> None:
    if not inside():
        return
    top = str(Path(folder).resolve())
    for point in sorted(_mount_points(), reverse=True):
        if point.startswith(top + "/"):
            thaw(point)


def _mount_points() -> set[str]:
    return {unescape(line.split()[4])
            for line in Path("/proc/self/mountinfo").read_text().splitlines()}


def unescape(field: str) -> str:
    """A mountinfo path: the kernel writes a space, a tab, a newline and a backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda found: chr(int(found.group(1), 8)), field)
