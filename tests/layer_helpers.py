"""Looking at image layers from inside the sandbox's own mount namespace (the server's), as any
process the sandbox runs sees them: which are mounts and with what options, and running a
command there.

`plant_setuid_probe` has a machine's ec2-user make a copy of `id` setuid to itself, as an app
packaged with `mode: "4755"` would; an image of the machine then holds it in its top layer.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sandbox.machines import frozen, image, images
from sandbox.machines import instances as machines

PROBE = "home/ec2-user/probe"  # where the probe lies, in the machine and in its image's layer
FROZEN = {"ro", "nosuid", "nodev"}


def in_server(pid: int, argv: list[str]) -> subprocess.CompletedProcess:
    """Run `argv` as root in the mount namespace of the sandbox server `pid` (and its user
    namespace, without root: there its root is the user who runs the sandbox)."""
    own = ["--user"] if os.stat(f"/proc/{pid}/ns/user").st_ino != os.stat(
        "/proc/self/ns/user").st_ino else []
    return subprocess.run(["nsenter", f"--target={pid}", *own, "--mount", "--", *argv],
                          capture_output=True, text=True, timeout=30)


def mounts(pid: int) -> dict[str, set[str]]:
    """Mount point → its per-mount options, in the mount namespace of process `pid`."""
    found = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        found[frozen.unescape(fields[4])] = set(fields[5].split(","))
    return found


def layers(state_dir: Path) -> list[Path]:
    """Every layer the sandbox holds: the base image's and those of every registered image."""
    found = {layer for image_id in images.image_ids(state_dir)
             for layer in images.stack(state_dir, image_id) or []}
    base = image.layer_dir(state_dir)
    return sorted(found | ({base} if base.is_dir() else set()))


def not_frozen(pid: int, state_dir: Path) -> list[str]:
    """The layers that are not read-only, nosuid, nodev mounts in the namespace of `pid`."""
    seen = mounts(pid)
    return [f"{layer}: {sorted(seen.get(str(layer), {'not a mount'}))}"
            for layer in layers(state_dir) if not seen.get(str(layer), set()) >= FROZEN]


def plant_setuid_probe(state_dir: Path, instance_id: str) -> None:
    enter = machines.enter_command(state_dir, instance_id)
    done = subprocess.run([*enter, "install", "-m", "4755", "/usr/bin/id", f"/{PROBE}"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def run_probe(pid: int, layer: Path) -> str:
    """What the probe in `layer` says is its effective uid, run by root in the server's
    namespace: "0" when its setuid bit grants nothing."""
    done = in_server(pid, [str(layer / PROBE), "-u"])
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def write_into(pid: int, layer: Path) -> str:
    """Root of the server's namespace writes a file into `layer` and sets a setuid bit on the
    probe in it; what each said (nothing when it could)."""
    done = in_server(pid, ["sh", "-c", f"echo x > {layer}/written; chmod u+s {layer}/{PROBE}"])
    return done.stderr
