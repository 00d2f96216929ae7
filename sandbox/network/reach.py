"""Which load balancers a sandbox machine reaches, as its network would let it on AWS.

A machine that reaches balancers (a CodeBuild build's: sandbox.aws.codebuild.builds) is
registered with its place: {"vpc": its VPC's id or None, "private": its address in its subnet,
"public": the address its requests to the internet leave from (a build's own without a VPC, its
subnet's NAT gateway's in one) or None (no way to the internet)}. On AWS:
- an internet-facing balancer's DNS name resolves to public addresses, reached over the
  internet: from a machine with a way there, its requests coming from its public address;
- an internal balancer's name resolves to private addresses of its VPC, reached from inside
  that VPC only, from the machine's private address.
The balancer's security groups then admit or drop the request as for any client
(sandbox.network.fronts).

In the sandbox a balancer's DNS name is its loopback address, where its listeners listen on the
host (sandbox.aws.elbv2.load_balancers). Inside a machine that address is the machine's own
loopback: there its way out (sandbox.machines.forward) listens on each address and port the
machine reaches, as the machine's `balancers.json` lists them (written here, again whenever a
listener or a balancer changes), and relays each connection to the listener from a loopback
address of the machine's own on the host (its `source`). The load balancers' process is told,
with the listeners, which place each source stands for (`clients`), and takes the machine's
private or public address as the client's. Nothing else of a machine reaches a balancer: an
address it does not reach has no listener inside it, and its connection is refused.

    register(state_dir, machine, place) -> (file, source)   # before the machine starts
    update(listeners) -> changed files     # the supervisor's listeners (what each one serves)
    wait(changed, timeout)                 # until the ways out listen as the files say
    clients() -> {source: place}
    forget(machine)
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

from sandbox.machines import instances as machines

FILE = "balancers.json"
BOUND = "balancers.bound"  # the `seq` of the file the machine's way out listens as
_LOCK = threading.RLock()
_MACHINES: dict[str, dict] = {}  # machine id -> {"place", "source", "file", "listening", "seq"}
_SEQ = iter(range(1, 1 << 62))


def register(state_dir: str | Path, machine: str, place: dict,
             listeners: dict | None = None) -> tuple[Path, str]:
    """Record the machine's place; the file its way out reads and its source address. The
    file lists what it reaches of `listeners` (the supervisor's, when given) until the
    supervisor's next round."""
    folder = machines.instance_dir(state_dir, machine)
    folder.mkdir(parents=True, exist_ok=True)
    with _LOCK:
        taken = {entry["source"] for entry in _MACHINES.values()}
        source = _source_address(taken)
        entry = {"place": dict(place), "source": source, "file": folder / FILE,
                 "listening": None, "seq": 0}
        _MACHINES[machine] = entry
        _write(entry, reached(place, listeners or {}))
    return entry["file"], source


def forget(machine: str) -> None:
    with _LOCK:
        _MACHINES.pop(machine, None)


def clients() -> dict[str, dict]:
    """The place each machine's source address stands for (for the load balancers' process)."""
    with _LOCK:
        return {entry["source"]: dict(entry["place"]) for entry in _MACHINES.values()}


def reached(place: dict, listeners: dict) -> list[list]:
    """The [address, port] of each listener a machine in `place` reaches."""
    found = set()
    for spec in listeners.values():
        if spec.get("internal"):
            ok = place.get("vpc") is not None and place["vpc"] == spec.get("vpc")
        else:
            ok = place.get("public") is not None
        if ok:
            found.add((spec["host"], int(spec["port"])))
    return [list(where) for where in sorted(found)]


def update(listeners: dict) -> list[Path]:
    """Each machine's file follows the listeners; the files that changed."""
    changed = []
    with _LOCK:
        for entry in _MACHINES.values():
            wanted = reached(entry["place"], listeners)
            if wanted != entry["listening"]:
                _write(entry, wanted)
                changed.append(entry)
    return [(entry["file"], entry["seq"]) for entry in changed]


def wait(changed: list, timeout: float) -> None:
    """Until each changed machine's way out listens as its file says (or `timeout` seconds):
    a listener made through the API answers in the machine as soon as the call returns. A
    machine that ended meanwhile is not waited for."""
    deadline = time.monotonic() + timeout
    for path, seq in changed:
        while time.monotonic() < deadline and path.parent.is_dir():
            if _bound(path) >= seq:
                break
            time.sleep(0.01)


def _bound(path: Path) -> int:
    try:
        return int((path.parent / BOUND).read_text() or 0)
    except (OSError, ValueError):
        return 0


def _write(entry: dict, listening: list[list]) -> None:
    entry["seq"] = next(_SEQ)
    entry["listening"] = listening
    path = entry["file"]
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"seq": entry["seq"], "listeners": listening}))
    os.replace(temporary, path)


def _source_address(taken: set[str]) -> str:
    """A loopback address of the machine's own on the host, in 127.64.0.0/10: clear of the
    host's 127.0.x.x and of the balancers' 127.128.0.0/9."""
    while True:
        found = f"127.{random.randint(64, 127)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        if found not in taken:
            return found
