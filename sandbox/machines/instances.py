"""Sandbox instances: machines that look like Amazon Linux 2023 to the software on them.

Each instance is its own mount, PID, network, UTS and IPC namespace (see boot.py) over its own
writable layer (`upper/`) on read-only layers: the layers it was launched from (an image's, top
first), the base image (image.py) and, for the folders of programs the host shares (/usr, /etc:
boot.HOST_SHARED), the host's underneath, whose programs it runs; the layers are used where they
lie, never copied. Nothing else of the host is there: its state folders (/var, /tmp, /run, homes,
/opt) are the image's, whatever the host's own hold (not its logs, caches, package databases,
homes or the sandbox's state). Its PID 1 is
docker-systemctl-replacement, so units enabled in an image start at launch.
Its network namespace has only loopback, holding the instance's private address, plus one way
out: 127.0.0.1:<sandbox port> leads to the sandbox's own endpoint (its S3, the Kiln repository;
forward.py). Everything lives under `<state_dir>/machines/instances/<id>/`; the host's mounts
and network are never changed. Run without root, the sandbox server, and so every instance, is in
a user namespace of its own (sandbox/userns.py).

The API (the sandbox's EC2 and load balancers call it; nothing in Kiln does):

    launch(state_dir, instance_id, address, layers=(), sandbox_ports=(), user_data=None) -> Path
        Start the instance; returns its directory. `layers`: read-only directories, top first;
        `sandbox_ports`: the loopback ports of the sandbox's endpoint (and proxies before it);
        `user_data`: run at first boot as cloud-init runs it (cloudinit.py).
    running(state_dir, instance_id) -> bool
    stopped(state_dir, instance_id) -> bool       # it booted, and its init has ended since
    address(state_dir, instance_id) -> str        # its private IP, on its own loopback
    connect(state_dir, instance_id, port, timeout=5) -> socket.socket
        A TCP connection to <address>:port made inside the instance's network namespace: how a
        load balancer reaches an app on the instance (two instances may both listen on :8080).
    enter_command(state_dir, instance_id) -> list[str]
        argv prefix that runs a command inside the instance as ec2-user (the SSH session's way in).
    upper(state_dir, instance_id) -> Path         # its writable layer, e.g. for an image of it
    terminate(state_dir, instance_id)             # ends every process, unmounts, removes it
    terminate_all(state_dir)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sandbox import process_identity, userns
from sandbox.machines import aws_names, boot, cloudinit, confine, forward, image, images

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 20


def instances_dir(state_dir: str | Path) -> Path:
    return Path(state_dir).resolve() / "machines" / "instances"


def instance_dir(state_dir: str | Path, instance_id: str) -> Path:
    if not instance_id.replace("-", "").isalnum():
        raise ValueError(f"not an instance id: {instance_id!r}")
    return instances_dir(state_dir) / instance_id


def upper(state_dir: str | Path, instance_id: str) -> Path:
    return instance_dir(state_dir, instance_id) / "upper"


def _meta(state_dir, instance_id) -> dict:
    path = instance_dir(state_dir, instance_id) / "instance.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def address(state_dir: str | Path, instance_id: str) -> str:
    return _meta(state_dir, instance_id)["address"]


def init_pid(state_dir: str | Path, instance_id: str) -> int | None:
    return _meta(state_dir, instance_id).get("init_pid")


def running(state_dir: str | Path, instance_id: str) -> bool:
    meta = _meta(state_dir, instance_id)
    return _ours(meta, "init_pid")


def _ours(meta: dict, key: str) -> bool:
    """Whether the process recorded under `key` still runs as the one recorded (name and
    identity): after a reboot its number may be another's."""
    pid = meta.get(key)
    return bool(pid) and _comm(pid) == meta.get("names", {}).get(key) and \
        process_identity.same(pid, meta.get("identities", {}).get(key))


def launch(state_dir: str | Path, instance_id: str, address: str, layers=(),
           sandbox_ports=(), provides=(), chef_solo: str | None = None,
           user_data: bytes | None = None, routes: dict | None = None,
           endpoint_port: int | None = None, balancers: tuple | None = None) -> Path:
    """Start the instance from `layers` over the base image, its user data handed to its
    cloud-init; its directory. `routes` (sandbox.aws.ec2.routes.reach): the AWS services its
    VPC lets it reach; None: all (a machine outside any VPC, a build's). `endpoint_port`: the
    sandbox's endpoint, where AWS's service names lead in the instance (aws_names.py).
    `balancers`: (file, source address) of the load balancers it reaches
    (sandbox.network.reach); None: none."""
    state = Path(state_dir).resolve()
    base = image.ensure(state, tuple(provides), chef_solo)
    images.private(instances_dir(state))  # its writable layer, a bake's staging dir in it
    world = instance_dir(state, instance_id)
    for name in ("upper", "work", "root", "scratch"):
        (world / name).mkdir(parents=True, exist_ok=True)
    cloudinit.prepare(world / "upper", instance_id, user_data)
    ids = userns.instance_ids()
    if ids:  # what the instance's root finds in its own layer is its own
        userns.shift_owners(world / "upper", *ids)
    spec = {"root": str(world / "root"), "upper": str(world / "upper"),
            "work": str(world / "work"), "hostname": "ip-" + address.replace(".", "-"),
            "layers": [*(str(Path(layer).resolve()) for layer in layers), str(base)],
            "scratch": str(world / "scratch"), "binds": _binds(chef_solo),
            "hide": [str(state)], "address": address, "ids": ids, "aws": None}
    tls = aws_names.ensure(state) if endpoint_port else None
    if tls:
        spec["aws"] = {"address": aws_names.ADDRESS, "names": aws_names.names(),
                       "cas": [str(ca) for ca in aws_names.trusted(state)]}
    with open(world / "console.log", "ab") as log:
        starter = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--net", "--uts", "--ipc", "--fork", "--kill-child",
             sys.executable, "-m", "sandbox.machines.boot", json.dumps(spec)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    meta = {"address": address, "starter_pid": starter.pid, "names": {"starter_pid": "unshare"},
            "identities": {"starter_pid": process_identity.of(starter.pid)}}
    _save(world, meta)
    if routes is not None:
        write_routes(state, instance_id, routes)
    pid = _wait_for_init(starter, world)
    meta["init_pid"], meta["names"]["init_pid"] = pid, "systemd"
    meta["identities"]["init_pid"] = process_identity.of(pid)
    _save(world, meta)
    if sandbox_ports:
        endpoints = (tls, endpoint_port) if tls else None
        process, start = _forward(world, pid, sandbox_ports, routes is not None, endpoints,
                                  balancers)
        meta["forward_pid"] = process.pid
        meta["names"]["forward_pid"] = _comm(process.pid)
        meta["identities"]["forward_pid"] = process_identity.of(process.pid)
        _save(world, meta)  # recorded first: a termination meanwhile ends it too
        _wait_listening(world / "forward.log", start, process)
    return world


def stopped(state_dir: str | Path, instance_id: str) -> bool:
    """The instance booted and has stopped since (its init ended: a halt, a crash, a kill)."""
    return bool(init_pid(state_dir, instance_id)) and not running(state_dir, instance_id)


def _save(world: Path, meta: dict) -> None:
    path = world / "instance.json"
    path.with_suffix(".tmp").write_text(json.dumps(meta))
    os.replace(path.with_suffix(".tmp"), path)


def _binds(chef_solo: str | None) -> list[str]:
    """Host folders shown read-only in every instance: the host's Chef installation (the folder
    above its bin/) when it lies outside the folders the host shares (boot.HOST_SHARED)."""
    if not chef_solo:
        return []
    prefix = Path(chef_solo).resolve().parent.parent
    # A chef-solo in /bin (a prefix of /) is in a shared folder too: never bind the host's /.
    inside = len(prefix.parts) < 2 or prefix.parts[1] in boot.HOST_SHARED
    return [] if inside else [str(prefix)]


def _wait_for_init(starter: subprocess.Popen, world: Path) -> int:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if starter.poll() is not None:
            break
        for child in _children(starter.pid):
            if _comm(child) == "systemd":
                return child
        time.sleep(0.02)
    log = (world / "console.log").read_text(errors="replace").strip().splitlines()
    _kill(starter.pid)
    raise RuntimeError(f"sandbox instance {world.name} did not boot: "
                       f"{log[-1] if log else 'no output'}")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def write_routes(state_dir: str | Path, instance_id: str, routes: dict) -> None:
    """What the instance's way out admits from now on (read for each connection)."""
    path = instance_dir(state_dir, instance_id) / "routes.json"
    path.with_suffix(".tmp").write_text(json.dumps(routes))
    os.replace(path.with_suffix(".tmp"), path)


def _forward(world: Path, pid: int, ports, routed: bool, endpoints=None,
             balancers=None) -> tuple[subprocess.Popen, int]:
    """The instance's way out, started, and where its log's new lines begin."""
    with open(world / "forward.log", "ab") as log:
        check = [f"--routes={world / 'routes.json'}"] if routed else []
        if endpoints:  # AWS's names, over TLS, to the sandbox's endpoint
            tls, port = endpoints
            check.append(f"--endpoints={tls['certificate']},{tls['key']},{port},{tls['ca']}")
        if balancers:  # the load balancers' listeners it reaches
            check.append(f"--balancers={balancers[0]},{balancers[1]}")
        argv = [sys.executable, "-m", "sandbox.machines.forward", *check, str(pid),
                *map(str, ports)]
        start = log.tell()
        process = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=log, start_new_session=True)
    return process, start


def _wait_listening(log: Path, start: int, process: subprocess.Popen) -> None:
    """Until the way out listens (its log says so from `start` on): the instance's programs,
    its user data among them, find AWS reachable from their first call, as on EC2."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        with open(log, "rb") as text:
            text.seek(start)
            if forward.READY.encode() in text.read():
                return
        time.sleep(0.02)


def connect(state_dir: str | Path, instance_id: str, port: int,
            timeout: float = 5) -> socket.socket:
    """A TCP connection to the instance's `port`, made inside its network namespace."""
    pid = init_pid(state_dir, instance_id)
    if not pid or not running(state_dir, instance_id):
        raise ConnectionRefusedError(f"sandbox instance {instance_id} is not running")
    target = (address(state_dir, instance_id), port)

    def make():
        return socket.create_connection(target, timeout=timeout)

    return forward.in_namespace(pid, make)


def enter_command(state_dir: str | Path, instance_id: str) -> list[str]:
    """argv prefix: the rest runs inside the instance, as ec2-user, with AL2023's environment."""
    pid = init_pid(state_dir, instance_id)
    if not pid or not running(state_dir, instance_id):
        raise RuntimeError(f"sandbox instance {instance_id} is not running")
    user, uid = image.EC2_USER
    # Without root the instance is in the server's user namespace: enter that first.
    own = ["--user"] if os.stat(f"/proc/{pid}/ns/user").st_ino != os.stat(
        "/proc/self/ns/user").st_ino else []
    return ["nsenter", f"--target={pid}", *own, "--mount", "--uts", "--ipc", "--net", "--pid",
            "--root", "--wd", "--", image.CONFINE,  # as the instance's init is (boot.py)
            "setpriv", f"--reuid={uid}", f"--regid={uid}", "--init-groups",
            "--bounding-set=-all," + ",".join(f"+{c}" for c in confine.KEPT_CAPABILITIES), "--",
            "env", "-i", f"HOME=/home/{user}", f"USER={user}", f"LOGNAME={user}",
            "SHELL=/bin/bash", "LANG=C.UTF-8",
            "PATH=/usr/local/bin:/usr/bin:/usr/local/sbin:/usr/sbin"]


def terminate(state_dir: str | Path, instance_id: str) -> None:
    """End every process of the instance (its PID namespace goes with its init), then remove it."""
    world = instance_dir(state_dir, instance_id)
    meta = _meta(state_dir, instance_id)
    ours = {key: _ours(meta, key) for key in ("forward_pid", "init_pid", "starter_pid")}
    for key in ("forward_pid", "init_pid", "starter_pid"):
        # Only the process recorded at launch: a pid reused since by another is left alone.
        if ours[key]:
            _kill(meta[key])
    for key in ("forward_pid", "init_pid", "starter_pid"):
        if ours[key]:
            _wait_gone(meta[key])
    for pid in _strays(world):
        _kill(pid)
        _wait_gone(pid)
    userns.remove(world)  # its files may belong to the instance's accounts


def _strays(world: Path) -> list[int]:
    """Processes of a boot that was cut short before it recorded them (its server was ended
    meanwhile): those whose command line names this instance's own root."""
    mark = f'"root": "{world / "root"}"'.encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if mark in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return [pid for pid in found if pid != os.getpid()]


def terminate_all(state_dir: str | Path) -> None:
    folder = instances_dir(state_dir)
    for world in sorted(folder.glob("*")) if folder.is_dir() else []:
        terminate(state_dir, world.name)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _wait_gone(pid: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if _comm(pid) is None or _state(pid) == "Z":
            return
        time.sleep(0.02)


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
