"""The first process of a sandbox instance: build its filesystem, then become its init.

Run by `unshare` as PID 1 of new mount, PID, network, UTS and IPC namespaces:

    python -m sandbox.machines.boot SPEC_JSON

SPEC: {"root", "upper", "work", "layers": [read-only layers, topmost first; the host's / goes
under them], "layer_copies": where the layers are copied to (a tmpfs mounted here),
"hide": [host paths the instance must not see], "hostname", "address"}. Everything mounted here
lives in the instance's own mount namespace and goes when its last process ends; the host's
mounts are never touched (propagation is made private first).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
INIT = "/usr/lib/systemd/systemd"
CLOUD_INIT = "/usr/libexec/cloud-init/stage"


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def main(spec: dict) -> None:
    root = spec["root"]
    mount("--make-rprivate", "/")
    lowers = ":".join([*_copied(spec["layers"], spec["layer_copies"]), "/"])
    mount("-t", "overlay", "overlay", "-o",
          f"lowerdir={lowers},upperdir={spec['upper']},workdir={spec['work']}", root)
    for path in spec["hide"]:
        if os.path.isdir(root + path):
            mount("-t", "tmpfs", "-o", "mode=0755,size=1m", "tmpfs", root + path)
    mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", f"{root}/proc")
    mount("-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", f"{root}/sys")
    for path, options in (("/run", "mode=0755"), ("/tmp", "mode=1777"), ("/dev", "mode=0755")):
        mount("-t", "tmpfs", "-o", f"nosuid,{options}", "tmpfs", root + path)
    _devices(root)
    subprocess.run(["hostname", spec["hostname"]], check=True)
    with open(f"{root}/etc/hosts", "w") as hosts:
        hosts.write(f"127.0.0.1 localhost\n::1 localhost\n"
                    f"{spec['address']} {spec['hostname']}\n")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{spec['address']}/32", "dev", "lo"], check=True)
    os.chdir(root)
    # The old root goes: nothing in the instance can reach the host's filesystem again.
    subprocess.run(["pivot_root", ".", "."], check=True)
    subprocess.run(["umount", "-l", "."], check=True)
    os.chdir("/")
    # cloud-init's early stage (write_files) runs before any service starts, as on EC2.
    if os.access(CLOUD_INIT, os.X_OK):
        subprocess.run([CLOUD_INIT, "init"], check=False)
    sys.stdout.flush()
    os.execv(INIT, [INIT])


def _copied(layers: list[str], into: str) -> list[str]:
    """The layers copied onto a tmpfs: overlayfs refuses a lower layer inside another (/)."""
    mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", into)
    copies = []
    for number, layer in enumerate(layers):
        copy = f"{into}/{number}"
        subprocess.run(["cp", "-a", layer, copy], check=True)
        copies.append(copy)
    return copies


def _devices(root: str) -> None:
    for name in DEVICES:
        target = f"{root}/dev/{name}"
        open(target, "w").close()
        mount("--bind", f"/dev/{name}", target)
    os.makedirs(f"{root}/dev/pts")
    os.makedirs(f"{root}/dev/shm")
    mount("-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620", "devpts", f"{root}/dev/pts")
    mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=1777", "tmpfs", f"{root}/dev/shm")
    os.symlink("pts/ptmx", f"{root}/dev/ptmx")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
