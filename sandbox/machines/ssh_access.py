"""Sandbox bake instances: how the sandbox's EC2 reaches its machines over SSH.

The sandbox's EC2 (moto, patched by sandbox.aws.ec2.run_instances) calls `launch` at RunInstances,
the way cloud-init would on AWS: the instance starts as a machine of its own
(sandbox.machines.instances: namespaces over layers, Amazon Linux 2023 to the software on it),
and, when its key pair is one that Kiln's bake created in this sandbox, the key pair's public key
goes into the sandbox sshd's `authorized_keys`, tied by a forced command to that instance. Every
session opened with that key runs `python -m sandbox.machines.session`, which enters the
instance and runs as ec2-user there. `terminate` removes the key and ends the instance.

What the sandbox machine of this host offers an instance is kept in
`<state_dir>/machines/host.json`: the host's chef-solo (kiln.sandbox.chef_solo, else the one on
PATH), the extra capabilities of the base image (kiln.sandbox.base_provides), the ports an
instance reaches (the sandbox's endpoint, and proxies before it) and the endpoint's own port,
where AWS's service names lead inside an instance (aws_names.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from cloud.console import say
from sandbox.machines import images
from sandbox.machines import instances as machines
from sandbox.machines.instances import ROOT
from sandbox.sshd import Sshd, current_user

_booting: dict[str, threading.Thread] = {}  # instances launching in the background
_booting_lock = threading.Lock()
KEY_OPTIONS = "no-port-forwarding,no-agent-forwarding,no-X11-forwarding"
# The install command of a sandbox bake: Chef is never installed on the host by a bake.
CHEF_MISSING = ("echo 'sandbox: no chef-solo on this machine: install Chef Infra Client "
                "{version} (or Cinc) and put chef-solo on PATH or set kiln.sandbox.chef_solo; "
                "see README' >&2; exit 1")


# -- lifecycle, called by sandbox.control ---------------------------------------------------
def start(state_dir: str | Path) -> int:
    """Start the sandbox sshd (reused when running); its port."""
    return Sshd(state_dir).up()


def stop(state_dir: str | Path) -> bool:
    """Stop the sshd and end every instance."""
    machines.terminate_all(state_dir)
    return Sshd(state_dir).down()


def host_file(state_dir: str | Path) -> Path:
    return Path(state_dir).resolve() / "machines" / "host.json"


def configure(state_dir: str | Path, sandbox_port: int | None, chef_solo: str | None = None,
              provides=()) -> dict:
    """Record what instances get from this host: chef-solo, base capabilities, the endpoint."""
    found = chef_solo or shutil.which("chef-solo")
    path = host_file(state_dir)
    known = json.loads(path.read_text()) if path.is_file() else {}
    # Proxies a running bake was told to reach stay reachable when the sandbox is brought up
    # again meanwhile (another task's `up` must not cut a bake off from its repository).
    ports = sorted({*known.get("sandbox_ports", []), sandbox_port} - {None})
    # A shell without chef-solo on PATH does not make the sandbox forget the one it had.
    recorded = str(Path(found).resolve()) if found else known.get("chef_solo")
    host = {"chef_solo": recorded, "provides": list(provides), "sandbox_ports": ports,
            "endpoint_port": sandbox_port or known.get("endpoint_port")}
    images.machines_dir(state_dir)
    _write(path, host)
    return host


def _write(path: Path, host: dict) -> None:
    """Replace host.json whole, so an instance launching meanwhile never reads half of it."""
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(host))
    temporary.replace(path)


def reach_through(state_dir: str | Path, port: int) -> None:
    """Instances launched from now on also reach 127.0.0.1:`port`: a proxy before the sandbox's
    endpoint (one that injects faults, say), which a bake through it names in the repo's URL."""
    path = host_file(state_dir)
    host = json.loads(path.read_text())
    host["sandbox_ports"] = sorted({*host["sandbox_ports"], port})
    _write(path, host)


def overlay(settings, state_dir: str | Path | None = None):
    """Point the bake at the sandbox sshd; return the same settings, changed in place.

    kiln.bake.ssh_port: the sshd's port; ssh_user: the current user (the only one sshd admits;
    the session becomes ec2-user inside the instance); ssh_cidrs: 127.0.0.1/32 when empty (no
    public-IP lookup offline); chef_install_command: one that fails saying chef-solo is missing
    (a bake never installs Chef on this host). Smoke commands stay the app's own.
    """
    sshd = Sshd(state_dir or settings.sandbox.state_dir)
    bake = settings.bake
    bake["ssh_port"] = sshd.port or start(sshd.dir.parent)
    # Once per settings object: a caller may adjust the overlaid values and connect again.
    if not getattr(settings, "sandbox_overlaid", False):
        bake["ssh_user"] = current_user()
        if not bake.get("ssh_cidrs"):
            bake["ssh_cidrs"] = [f"{sshd.host}/32"]
        bake["chef_install_command"] = CHEF_MISSING
        settings.sandbox_overlaid = True
    say(f"sandbox: bake instances are reached over the sandbox sshd at "
        f"{sshd.host}:{bake['ssh_port']}")
    return settings


# -- instances, called inside the moto server -----------------------------------------------
def launch(state_dir: str | Path, instance_id: str, address: str,
           public_key: str | None = None, layers=(), user_data: bytes | None = None,
           ssh_from: list[str] | tuple = (), routes: dict | None = None,
           on_boot=None, reach: tuple[int, ...] = (), balancers: tuple | None = None) -> Path:
    """Start the instance; authorize `public_key` (a Kiln bake key pair's) for it, from the
    addresses in `ssh_from` (CIDRs its security groups admit on port 22). `routes`: what of
    AWS it reaches (instances.launch); `on_boot()` runs once it has booted; `reach`: further
    host ports it reaches (a build's machine: the sandbox sshd, the instances' SSH);
    `balancers`: the load balancers' listeners it reaches (instances.launch)."""
    path = host_file(state_dir)
    host = json.loads(path.read_text()) if path.is_file() else configure(state_dir, None)
    world = machines.launch(state_dir, instance_id, address, layers=layers,
                            sandbox_ports=sorted({*host["sandbox_ports"], *reach}),
                            provides=host["provides"],
                            chef_solo=host["chef_solo"], user_data=user_data, routes=routes,
                            endpoint_port=host.get("endpoint_port"), balancers=balancers)
    if on_boot:
        on_boot()
    if public_key:
        with _keys(state_dir) as lines:
            lines[:] = [line for line in lines if not _belongs(line, instance_id)]
            lines.append(authorized_key_line(state_dir, instance_id, public_key, ssh_from))
    return world


def readmit(state_dir: str | Path, instance_id: str, ssh_from: list[str] | tuple) -> None:
    """The instance's key, if authorized, now admitted from `ssh_from` only (its security
    groups changed)."""
    with _keys(state_dir) as lines:
        for number, line in enumerate(lines):
            if _belongs(line, instance_id):
                _options, kind, body, _mark = line.rstrip().rsplit(" ", 3)
                lines[number] = authorized_key_line(state_dir, instance_id, f"{kind} {body}",
                                                    ssh_from)


def launch_later(state_dir: str | Path, instance_id: str, address: str, layers=(),
                 user_data: bytes | None = None, routes: dict | None = None,
                 on_boot=None) -> None:
    """Start the instance in the background, as EC2 boots one while RunInstances has returned
    and it is pending (no key: nobody logs into it, it runs what its image and user data say)."""
    def boot() -> None:
        try:
            launch(state_dir, instance_id, address, layers=layers, user_data=user_data,
                   routes=routes, on_boot=on_boot)
        except Exception as error:  # noqa: BLE001 - reported: a failed boot must not end the server
            print(f"sandbox: instance {instance_id} did not boot: {error}", file=sys.stderr,
                  flush=True)
        finally:
            with _booting_lock:
                _booting.pop(instance_id, None)

    thread = threading.Thread(target=boot, daemon=True, name=f"boot-{instance_id}")
    with _booting_lock:
        _booting[instance_id] = thread
    thread.start()


def is_machine(state_dir: str | Path, instance_id: str) -> bool:
    """The instance is a sandbox machine: booting, running, or stopped since."""
    with _booting_lock:
        if instance_id in _booting:
            return True
    return machines.instance_dir(state_dir, instance_id).is_dir()


def _booted(instance_id: str | None = None) -> None:
    """Wait for the boots under way (of one instance, or all), so none outlives its end."""
    with _booting_lock:
        threads = [t for i, t in _booting.items() if instance_id in (None, i)]
    for thread in threads:
        thread.join(machines.READY_TIMEOUT + 10)


def terminate(state_dir: str | Path, instance_id: str) -> None:
    """Remove the instance's key line and end the instance."""
    _booted(instance_id)
    with _keys(state_dir) as lines:
        lines[:] = [line for line in lines if not _belongs(line, instance_id)]
    machines.terminate(state_dir, instance_id)


def forget_all(state_dir: str | Path) -> None:
    """Every instance is gone (the sandbox was reset): no keys, no instances."""
    _booted()
    with _keys(state_dir) as lines:
        lines.clear()
    machines.terminate_all(state_dir)


def authorized_key_line(state_dir: str | Path, instance_id: str, public_key: str,
                        ssh_from: list[str] | tuple = ()) -> str:
    """The key's line: the session enters the instance, from the admitted addresses only (no
    CIDR: from nowhere, as a security group with no SSH rule drops every connection)."""
    # From the project's folder, whatever installs it: sshd gives the command a clean environment.
    command = f"cd {shlex.quote(str(ROOT))} && exec " + shlex.join(
        [sys.executable, "-m", "sandbox.machines.session", str(Path(state_dir).resolve()),
         instance_id])
    key = " ".join(public_key.split()[:2])  # type and base64, without moto's comment
    admitted = ",".join(ssh_from) or "!*"
    return (f'command="{command}",from="{admitted}",{KEY_OPTIONS} {key} '
            f"kiln-sandbox-instance={instance_id}")


def _belongs(line: str, instance_id: str) -> bool:
    return line.rstrip().endswith(f" kiln-sandbox-instance={instance_id}")


@contextmanager
def _keys(state_dir: str | Path):
    """The authorized_keys lines, locked; written back atomically on exit."""
    path = Sshd(state_dir).authorized_keys
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / "authorized_keys.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lines = path.read_text().splitlines() if path.exists() else []
        yield lines
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as handle:
            handle.write("".join(f"{line}\n" for line in lines))
        os.chmod(handle.name, 0o600)
        os.replace(handle.name, path)
