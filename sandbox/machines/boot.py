"""The first process of a sandbox instance: build its filesystem, then become its init.

Run by `unshare` as PID 1 of new mount, PID, network, UTS and IPC namespaces:

    python -m sandbox.machines.boot SPEC_JSON

SPEC: {"root", "upper", "work", "layers": [read-only layers, topmost first], "scratch": a folder
for a tmpfs of the boot's own, "binds": [host folders shown read-only at the same path],
"hide": [host paths the instance must not see], "hostname", "address", "ids": the host uid and
gid of the instance's root, run as root (userns.instance_ids), else null, "aws": null or
{"address", "names", "cas"}: where AWS's service names lead and the CAs the instance trusts
beside its image's (aws_names.py)}.

Run as root, the boot builds the filesystem as the host's root, then moves into a user namespace
of the instance's own, whose ids 0-65535 are the host's "ids" onwards, and becomes its init
there: no process of the instance is the host's root or any host user, and it holds no power
over its mounts or its network (those namespaces belong to the host's root).

The root is an overlay of the layers over a skeleton (the top-level folders and the host's
`/bin` → `usr/bin` style links); each folder the host shares (HOST_SHARED: `/usr`, `/etc`) is an
overlay of the layers' copy of that folder over the host's, whose programs the instance runs.
Everything else is the image's: `/var` (logs, caches, dnf's and rpm's databases, `/var/tmp`),
`/opt`, the homes and `/root` come from the layers alone (the base image's as Amazon Linux 2023
ships them, then what images wrote), and `/tmp`, `/run` and `/dev` are the instance's own
tmpfs; so whatever the host's history left in its own `/var` never shows. The layers are stacked
where they lie on disk, so an image's files are shared by all its instances, never copied. Both
overlays write into `upper` (the root's into it, a shared folder's into `upper/<folder>`), which
is what an image of the instance keeps. Everything mounted here lives in the instance's own mount
namespace and goes when its last process ends; the host's mounts are never touched (propagation
is made private first).
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import os
import subprocess
import sys

from sandbox import userns
from sandbox.machines import aws_names, confine

CLONE_NEWUSER = 0x10000000
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
INIT = "/usr/lib/systemd/systemd"
# Read-only inside, as a container runtime makes them: the kernel's settings and triggers.
READ_ONLY_PROC = ("sys", "sysrq-trigger", "irq", "bus", "fs")
CLOUD_INIT = "/usr/libexec/cloud-init/stage"
# The one list of what an instance takes from the host, read-only under the image's layers (an
# instance's writes go to its own layer): the host's programs stand in for the packages of an
# AMI. Nothing of the host's state is there: /var, /opt, homes come from the image alone.
HOST_SHARED = {
    "usr": "the programs and libraries an instance runs (sh, python3, dnf, rpm, sudo, ruby)",
    "etc": "the configuration those programs read (the dynamic linker's cache, alternatives, "
           "certificates); the image's own files lie over it (os-release, accounts, dnf, sudo) "
           "and its folders hide the host's units and repositories (image.HIDDEN)",
    "bin": "programs, where the host keeps them outside /usr (else a link into /usr)",
    "sbin": "the same, for system programs",
    "lib": "libraries and the dynamic loader, where the host keeps them outside /usr",
    "lib32": "the same, for 32-bit programs",
    "lib64": "the same, for the 64-bit dynamic loader's path",
    "libx32": "the same, for x32 programs",
}
# The rest of an Amazon Linux 2023 root's top level (mount points among them), with its modes.
TOP = {"proc": 0o555, "sys": 0o555, "dev": 0o755, "run": 0o755, "tmp": 0o1777, "home": 0o755,
       "root": 0o550, "mnt": 0o755, "media": 0o755, "srv": 0o755, "boot": 0o555}


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def overlay(target: str, lowers: list[str], upper: str, work: str) -> None:
    os.makedirs(work, exist_ok=True)
    # index=off: a system folder's overlay writes into a folder of the root overlay's upper.
    # In a user namespace (a sandbox without root) overlayfs keeps its marks in user.* xattrs.
    options = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work},index=off"
    mount("-t", "overlay", "overlay", "-o", options + (",userxattr" if userns.inside() else ""),
          target)


def main(spec: dict) -> None:
    root = spec["root"]
    mount("--make-rprivate", "/")
    mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", spec["scratch"])
    host_dirs = [name for name in HOST_SHARED
                 if os.path.isdir("/" + name) and not os.path.islink("/" + name)]
    for name in host_dirs:
        os.makedirs(f"{spec['upper']}/{name}", exist_ok=True)
        if spec.get("ids"):  # the shared folder's top, the instance's root's
            os.chown(f"{spec['upper']}/{name}", *spec["ids"])
    skeleton = _skeleton(spec["scratch"], spec["binds"])
    overlay(root, [*spec["layers"], skeleton], spec["upper"], f"{spec['work']}/_root")
    for name in host_dirs:
        _system_dir(spec, name)
    for path in spec["binds"]:
        mount("--bind", "-o", "ro", path, root + path)
    for path in spec["hide"]:
        if os.path.isdir(root + path):
            mount("-t", "tmpfs", "-o", "mode=0755,size=1m", "tmpfs", root + path)
    _kernel_filesystems(root, spec.get("ids"))
    _network(root, spec)
    _trust(root, spec)
    os.chdir(root)
    # The old root goes: nothing in the instance can reach the host's filesystem again.
    subprocess.run(["pivot_root", ".", "."], check=True)
    subprocess.run(["umount", "-l", "."], check=True)
    os.chdir("/")
    if spec.get("ids"):
        _own_user_namespace(*spec["ids"])
    # Every process from here on (cloud-init's, init's, their services') is confined.
    confine.confine()
    # cloud-init's early stage (write_files) runs before any service starts, as on EC2.
    if os.access(CLOUD_INIT, os.X_OK):
        subprocess.run([CLOUD_INIT, "init"], check=False)
    sys.stdout.flush()
    os.execv(INIT, [INIT])


def _skeleton(scratch: str, binds: list[str]) -> str:
    """The root's lowest layer: the top-level folders, the host's top-level links (merged
    /usr), and mount points for the bound folders."""
    skeleton = f"{scratch}/skeleton"
    os.makedirs(skeleton)
    for name in HOST_SHARED:
        if os.path.islink("/" + name):
            os.symlink(os.readlink("/" + name), f"{skeleton}/{name}")
        elif os.path.isdir("/" + name):
            os.mkdir(f"{skeleton}/{name}")
    for name, mode in TOP.items():
        os.mkdir(f"{skeleton}/{name}")
        os.chmod(f"{skeleton}/{name}", mode)
    for path in binds:
        os.makedirs(skeleton + path, exist_ok=True)
    return skeleton


def _system_dir(spec: dict, name: str) -> None:
    """/<name>, a folder the host shares: the layers' /<name> over the host's."""
    host = "/" + name
    lowers = [_outside(f"{layer}/{name}", host, f"{spec['scratch']}/{number}")
              for number, layer in enumerate(spec["layers"])
              if os.path.isdir(f"{layer}/{name}")]
    overlay(spec["root"] + host, [*lowers, host], f"{spec['upper']}/{name}",
            f"{spec['work']}/{name}")


def _outside(layer: str, host: str, copy_dir: str) -> str:
    """`layer`, or a copy of it when it lies inside `host` (a state dir under /var, say):
    overlayfs refuses a lower layer inside another."""
    if os.path.commonpath([layer, host]) != host:
        return layer
    os.makedirs(copy_dir, exist_ok=True)
    copy = f"{copy_dir}/{os.path.basename(host)}"
    subprocess.run(["cp", "-a", layer, copy], check=True)
    return copy


def _own_user_namespace(uid: int, gid: int) -> None:
    """Become root of a new user namespace whose ids 0-65535 are the host's `uid`/`gid`
    onwards. Its maps are written from outside it, by a child left in the host's namespace."""
    ready, go = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(go)
        os.read(ready, 1)
        parent = os.getppid()
        for kind, start in (("uid", uid), ("gid", gid)):
            with open(f"/proc/{parent}/{kind}_map", "w") as mapping:
                mapping.write(f"0 {start} {userns.IDS}\n")
        os._exit(0)
    os.close(ready)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER) != 0:
        raise OSError(ctypes.get_errno(), "unshare of a user namespace")
    os.write(go, b"y")
    os.close(go)
    _pid, status = os.waitpid(child, 0)
    if status != 0:
        raise RuntimeError("the instance's id maps were not written")
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def _kernel_filesystems(root: str, ids: list[int] | None) -> None:
    mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", f"{root}/proc")
    for name in READ_ONLY_PROC:
        target = f"{root}/proc/{name}"
        if os.path.exists(target):
            mount("--bind", target, target)
            mount("-o", "remount,bind,ro,nosuid,nodev,noexec", target)
    mount("-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", f"{root}/sys")
    owner = f",uid={ids[0]},gid={ids[1]}" if ids else ""  # the instance's root's
    for path, options in (("/run", "mode=0755"), ("/tmp", "mode=1777"), ("/dev", "mode=0755")):
        mount("-t", "tmpfs", "-o", f"nosuid,{options}{owner}", "tmpfs", root + path)
    os.mkdir(f"{root}/run/lock", 0o755)  # /var/lock's target, as systemd-tmpfiles makes it
    if ids:
        os.chown(f"{root}/run/lock", *ids)
    _devices(root, owner)


def _network(root: str, spec: dict) -> None:
    subprocess.run(["hostname", spec["hostname"]], check=True)
    # A new file, not the host's rewritten: without root the host's is not the instance's to
    # write (it belongs to an unmapped root), but it may be replaced.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{root}/etc/hosts")
    with open(f"{root}/etc/hosts", "w") as hosts:
        hosts.write(f"127.0.0.1 localhost\n::1 localhost\n"
                    f"{spec['address']} {spec['hostname']}\n")
        if spec.get("aws"):  # AWS's service names, as the VPC's resolver answers them on EC2
            hosts.writelines(f"{spec['aws']['address']} {name}\n"
                             for name in spec["aws"]["names"])
    if spec.get("ids"):
        os.chown(f"{root}/etc/hosts", *spec["ids"])
        # Its network belongs to the host's root, not to the instance's: its root may still
        # listen on any port (80, 443), as on EC2. /proc here is still the host's mount.
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start", "w") as start:
            start.write("0\n")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{spec['address']}/32", "dev", "lo"], check=True)
    # Where its instance metadata service answers (sandbox.machines.metadata), as on EC2.
    subprocess.run(["ip", "addr", "add", "169.254.169.254/32", "dev", "lo"], check=True)


def _trust(root: str, spec: dict) -> None:
    """The CA bundles the instance's programs read (aws_names.TRUST), with the sandbox's CAs
    appended (aws_names.trusted): copies on the boot's tmpfs, mounted over the bundles in the
    instance only."""
    if not spec.get("aws"):
        return
    authority = b""
    for path in spec["aws"]["cas"]:
        with open(path, "rb") as ca:
            authority += ca.read().rstrip(b"\n") + b"\n"
    folder = f"{spec['scratch']}/trust"
    os.makedirs(folder)
    found = sorted({path for pattern in aws_names.TRUST for path in glob.glob(f"{root}/{pattern}")
                    if os.path.isfile(path) and not os.path.islink(path)})
    for number, bundle in enumerate(found):
        with open(bundle, "rb") as source:
            text = source.read()
        copy = f"{folder}/{number}.pem"
        with open(copy, "wb") as target:
            target.write(text.rstrip(b"\n") + b"\n" + authority)
        os.chmod(copy, 0o644)
        mount("--bind", copy, bundle)


def _devices(root: str, owner: str) -> None:
    for name in DEVICES:
        target = f"{root}/dev/{name}"
        open(target, "w").close()
        mount("--bind", f"/dev/{name}", target)
    os.makedirs(f"{root}/dev/pts")
    os.makedirs(f"{root}/dev/shm")
    mount("-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620", "devpts", f"{root}/dev/pts")
    mount("-t", "tmpfs", "-o", f"nosuid,nodev,mode=1777{owner}", "tmpfs", f"{root}/dev/shm")
    os.symlink("pts/ptmx", f"{root}/dev/ptmx")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
