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

import ipaddress
import json
import os
import random
import sys
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
             listeners: dict | None = None, locate=None) -> tuple[Path, str]:
    """Record the machine's place; the file its way out reads and its source address. The
    file lists what it reaches of `listeners` (the supervisor's, when given) until the
    supervisor's next round. `locate(place)`: the place again, as routes and security groups
    are now (each round asks: they change while it runs)."""
    folder = machines.instance_dir(state_dir, machine)
    folder.mkdir(parents=True, exist_ok=True)
    with _LOCK:
        taken = {entry["source"] for entry in _MACHINES.values()}
        source = _source_address(taken)
        entry = {"place": dict(place), "source": source, "file": folder / FILE,
                 "listening": None, "seq": 0, "locate": locate}
        _MACHINES[machine] = entry
        _write(entry, reached(place, listeners or {}))
    return entry["file"], source


def forget(machine: str) -> None:
    with _LOCK:
        _MACHINES.pop(machine, None)


def clients() -> dict[str, dict]:
    """What each machine's source address stands for (for the load balancers' process): its
    addresses, and its security groups (a balancer's rule may name one)."""
    with _LOCK:
        return {entry["source"]: {key: entry["place"].get(key)
                                  for key in ("private", "public", "groups")}
                for entry in _MACHINES.values()}


def reached(place: dict, listeners: dict) -> list[list]:
    """The [address, port] of each listener a machine in `place` reaches."""
    found = set()
    for spec in listeners.values():
        if spec.get("internal"):
            ok = place.get("vpc") is not None and place["vpc"] == spec.get("vpc")
        else:
            ok = place.get("public") is not None
        if ok and _lets_out(place.get("egress"), spec):
            found.add((spec["host"], int(spec["port"])))
    return [list(where) for where in sorted(found)]


def _lets_out(rules: list[dict] | None, spec: dict) -> bool:
    """The machine's outbound rules let it out to the listener: to the balancer's subnets or
    groups (an internal one, in its VPC), or to a CIDR with public addresses in it (an
    internet-facing one). None: no security group (outside any VPC), everything goes out."""
    if rules is None:
        return True
    port = int(spec["port"])
    for rule in rules:
        if rule["protocol"] != "-1" and not (
                rule["protocol"] == "tcp" and rule["from"] <= port <= rule["to"]):
            continue
        if rule.get("group"):
            if spec.get("internal") and rule["group"] in spec.get("groups", ()):
                return True
            continue
        cidr = ipaddress.ip_network(rule["cidr"], strict=False) if rule.get("cidr") else None
        if cidr is None:
            continue
        if spec.get("internal"):
            if any(ipaddress.ip_network(subnet).overlaps(cidr)
                   for subnet in spec.get("subnets", ())):
                return True
        elif not cidr.is_private:
            return True
    return False


def update(listeners: dict) -> list[tuple[Path, int]]:
    """Each machine's file follows the listeners; (file, seq) of those that changed."""
    changed = []
    with _LOCK:
        for entry in _MACHINES.values():
            if entry["locate"] is not None:
                try:
                    entry["place"] = entry["locate"](entry["place"])
                except Exception as error:  # noqa: BLE001 - keep the place it had, say why
                    print(f"sandbox network: a machine's place was not refreshed: {error!r}",
                          file=sys.stderr, flush=True)
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
