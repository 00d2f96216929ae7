"""The load balancers' own process: every listener's proxy, away from the moto server.

Run as `python -m sandbox.network.fronts --state-dir DIR` by the moto server (`channel`), which
feeds it on its stdin, one JSON line each, what the listeners need: each listener (address,
certificate, rules, the balancer's attributes, the CIDRs its security groups admit clients
from) and each target group in use (targets, where they are, whether they are healthy, which
balancers their security groups drop). It answers on its stdout: an acknowledgement of each
state once its listeners listen, and a line per request for the balancers' metrics. It reads
nothing of moto's and imports none of it, so a flood of clients costs the AWS API nothing.
When its stdin ends (the server is gone, however it ended) it ends too.
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path

from sandbox import clock
from sandbox.network import channel, front, proxy, targets

CONNECT_TIMEOUT = 10  # seconds of AWS time: a connection a security group drops waits this


class Fronts:
    """The listeners of the last state the server sent, and what their requests share."""

    def __init__(self, state_dir: Path, out=None):
        self.state_dir = state_dir
        self.out = out or sys.stdout
        self.pool = front.Pool()
        self.weighted = proxy.Weighted()
        self.groups: dict[str, dict] = {}
        self.clients: dict[str, dict] = {}  # a machine's source address -> its place (reach)
        self.members: dict[str, set[str]] = {}  # a machine's private address -> its groups
        self._counters: dict[str, itertools.count] = {}
        self._listeners: dict[str, proxy.Listener] = {}
        self._failed: set[str] = set()
        self._noted: set[str] = set()
        self._write = threading.Lock()

    # -- the server's state --------------------------------------------------------------
    def apply(self, state: dict) -> None:
        """Follow the state: its groups, then its listeners (stopped, changed, started)."""
        self.groups = state.get("groups", {})
        self.clients = state.get("clients", {})
        self.members = {place["private"]: set(place.get("groups") or ())
                        for place in self.clients.values() if place.get("private")}
        wanted = state.get("listeners", {})
        # Stop what is gone or changed first: a listener moved off a port frees it for the one
        # that takes it over (an HTTP listener becoming HTTPS beside its redirect).
        stale = [arn for arn, listener in self._listeners.items()
                 if arn not in wanted or listener.key != _key(wanted[arn])]
        for arn in stale:
            self._listeners.pop(arn).stop()
        if stale:
            self._failed.clear()  # a port one of them held may be what another waited for
        for arn, spec in wanted.items():
            if arn in self._listeners:
                self._listeners[arn].spec = spec
            else:
                self._start(arn, spec)
        targets.set_listeners(listener.address for listener in self._listeners.values())

    def _start(self, arn: str, spec: dict) -> None:
        key = json.dumps([arn, _key(spec)])
        if key in self._failed:
            return
        try:
            listener = proxy.Listener(self, arn, spec)
        except Exception as error:  # noqa: BLE001 - a port in use, a certificate unusable: say so
            self._failed.add(key)
            print(f"sandbox network: listener {arn} cannot listen on {spec['host']}:"
                  f"{spec['port']}: {error}", file=sys.stderr, flush=True)
            return
        listener.start()
        self._listeners[arn] = listener

    def stop_all(self) -> None:
        for listener in self._listeners.values():
            listener.stop()
        self._listeners.clear()

    # -- what the proxies ask --------------------------------------------------------------
    def round_robin(self, group_arn: str) -> itertools.count:
        counter = self._counters.get(group_arn)
        if counter is None:
            counter = self._counters.setdefault(group_arn, itertools.count())
        return counter

    def endpoint(self, target: dict, lb_arn: str) -> targets.Endpoint | None:
        """Where a target is, for the balancer `lb_arn`'s requests."""
        where = target.get("endpoint")
        if where is None:
            return None
        if where[0] == "ip":
            host, port = where[1], int(where[2])
            usable = targets.loopback(host) and not targets.is_listener(host, port)
            return targets.Endpoint(host, port) if usable else None
        _kind, instance_id, host, port = where
        dropped = lb_arn in target.get("dropped", ())
        return targets.Endpoint(host, int(port), opener=lambda timeout: self._instance(
            instance_id, int(port), timeout, dropped))

    def _instance(self, instance_id: str, port: int, timeout: float, dropped: bool):
        """A connection inside a sandbox machine's network namespace."""
        if dropped:
            # Dropped, not refused: the connection attempt waits out its timeout (an ALB's is
            # 10 s), as with a security group on AWS.
            time.sleep(min(timeout, clock.real(CONNECT_TIMEOUT)))
            raise TimeoutError(f"{instance_id}:{port}: dropped by its security groups")
        from sandbox.machines import instances as machines

        return machines.connect(self.state_dir, instance_id, port, timeout=timeout)

    def client(self, spec: dict, peer: str) -> str:
        """The client's address as the balancer sees it: a sandbox machine's connections come
        from its source address on the host (sandbox.network.reach), and stand for its private
        address (an internal balancer, reached in its VPC) or its public one."""
        place = self.clients.get(peer)
        if place is None:
            return peer
        return place.get("private" if spec.get("internal") else "public") or peer

    def admits(self, spec: dict, client: str) -> bool:
        """Whether the balancer's security groups admit `client` on the listener's port."""
        address = ipaddress.ip_address(client)
        if any(address in ipaddress.ip_network(cidr, strict=False)
               for cidr in spec.get("admitted", ())):
            return True
        # A rule naming a source group admits its members, inside the balancer's VPC only.
        if spec.get("internal") and self.members.get(client, set()) & set(
                spec.get("admitted_groups", ())):
            return True
        self.note(f"load balancer {spec['lb']} drops {client} on port {spec['port']}: none of "
                  f"its security groups ({spec.get('groups_said', '')}) admits it")
        return False

    def note(self, message: str) -> None:
        """Say once in the server's log what a security group dropped (AWS says nothing)."""
        if message not in self._noted:
            self._noted.add(message)
            print(f"sandbox: {message}", file=sys.stderr, flush=True)

    def record(self, where, lb_arn: str, tg_arn: str | None, target_status: int | None,
               elb_status: int | None, seconds: float | None) -> None:
        """One request, for the balancer's metrics (counted by the server)."""
        self.send({"metric": [list(where), lb_arn, tg_arn, target_status, elb_status,
                              seconds]})

    def send(self, message: dict) -> None:
        line = json.dumps(message) + "\n"
        with self._write:
            self.out.write(line)
            self.out.flush()


def _key(spec: dict) -> list:
    """What a listener's socket is made of: a change of one of these restarts it."""
    return [spec["host"], int(spec["port"]), spec.get("certificate"), spec.get("tls")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--server", type=int, required=True, help="the moto server's pid")
    args = parser.parse_args(argv)
    channel.die_with_parent(args.server)
    clock.use(args.state_dir)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # nothing but the channel's lines on the channel
    fronts = Fronts(args.state_dir, out)
    for line in sys.stdin:
        seq = None
        try:
            state = json.loads(line)
            seq = state.get("seq")
            fronts.apply(state)
        except Exception as error:  # noqa: BLE001 - one bad state must not end the balancers
            print(f"sandbox network: a state was not applied: {error!r}", file=sys.stderr,
                  flush=True)
        fronts.send({"ack": seq})
    fronts.stop_all()  # the server is gone
    os._exit(0)  # worker threads may be serving: they end with the process


if __name__ == "__main__":
    main()
