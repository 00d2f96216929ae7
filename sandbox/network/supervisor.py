"""One thread in the moto server that keeps the network in step with what the APIs say.

The listeners' proxies run in a process of their own (`fronts`, started and ended through
`channel`); this side tells it what they need. Every tick it sends the listeners and the target
groups they forward to (when they changed: a new listener, a rule, a target's health, a
security group), runs the health checks that are due, publishes each period's metrics (counted
from the requests the process reports) and evaluates the alarms. Changes made through the API
reconcile at once, and wait until the process has them, so a listener answers as soon as
CreateListener returns and a changed rule or security group holds for the next request.
"""

from __future__ import annotations

import sys
import threading
import traceback
from pathlib import Path

from sandbox.network import alarms, channel, health, metrics, proxy, reach, targets

TICK = 0.2  # real seconds between rounds
APPLIED = 10.0  # real seconds an API call waits for the proxies to follow it


class Network:
    def __init__(self, state_dir: Path):
        self.health = health.HealthChecks()
        self.metrics = metrics.Metrics()
        self.alarms = alarms.Evaluator()
        self.fronts = channel.Fronts(state_dir, self._metric)
        self.balancers: dict[str, list[str]] = {}  # target group ARN -> balancers forwarding
        self.listeners: dict[str, dict] = {}  # the listeners last sent, by ARN
        self._listening = False  # some listener exists
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sandbox-network")

    # -- moto's state ------------------------------------------------------------------------
    @staticmethod
    def elbv2(account: str, region: str):
        from moto.elbv2.models import elbv2_backends

        return elbv2_backends[account][region]

    @staticmethod
    def _backends(backend_dict):
        for account, regions in list(backend_dict.items()):
            for region, backend in list(regions.items()):
                yield account, region, backend

    def _metric(self, record: list) -> None:
        where, *rest = record
        self.metrics.record(tuple(where), *rest)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.fronts.start()  # from the server's main thread, which lives as long as it does
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.fronts.stop()

    def stop_all(self) -> None:
        with self._lock:
            self.listeners = {}
            reach.update({})
            seq = self.fronts.send({"listeners": {}, "groups": {}, "clients": reach.clients()})
            targets.set_listeners(())
        self.fronts.wait(seq, APPLIED)
        self.health.clear()
        self.metrics.clear()
        self.alarms.forget()

    def _loop(self) -> None:
        while not self._stop.wait(TICK):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - one bad round must not end the network
                traceback.print_exc(file=sys.stderr)

    def tick(self) -> None:
        from moto.cloudwatch.models import cloudwatch_backends

        if not self.fronts.alive() and not self.fronts.ended:
            print("sandbox network: the load balancers' process ended; starting it again",
                  file=sys.stderr, flush=True)
            self.fronts.start()  # this thread lives as long as the server
        in_use = self.reconcile(wait=0)
        self.health.run([group for _where, _lb, group in in_use], self.balancers)
        if self.metrics.due():
            self.metrics.publish([(*where, lb, group.arn, *self._host_counts(group))
                                  for where, lb, group in in_use])
        self.alarms.run([backend for _a, _r, backend in self._backends(cloudwatch_backends)])

    def _host_counts(self, group) -> tuple[int, int]:
        healthy = sum(1 for t in list(group.targets) if self.health.healthy(group.arn, t))
        return healthy, len(group.targets) - healthy

    # -- listeners ---------------------------------------------------------------------------
    def reconcile(self, wait: float = APPLIED) -> list[tuple[tuple[str, str], str, object]]:
        """Send the listeners and the groups they forward to (waiting up to `wait` seconds for
        the proxies to follow); the target groups in use."""
        from moto.elbv2.models import elbv2_backends

        with self._lock:
            wanted: dict[str, dict] = {}
            in_use = []
            for account, region, backend in self._backends(elbv2_backends):
                for lb in list(backend.load_balancers.values()):
                    for listener in list(lb.listeners.values()):
                        wanted[listener.arn] = _listener((account, region), lb, listener)
                        for arn in _forwarded(backend, listener):
                            group = backend.target_groups.get(arn)
                            if group is not None:
                                in_use.append(((account, region), lb.arn, group))
            balancers: dict[str, list[str]] = {}
            for _where, lb_arn, group in in_use:
                balancers.setdefault(group.arn, []).append(lb_arn)
            self.balancers = balancers
            self._listening = bool(wanted)
            targets.set_listeners((spec["host"], spec["port"]) for spec in wanted.values())
            in_use = _unique(in_use)
            groups = {group.arn: self._group(group, balancers[group.arn])
                      for _where, _lb, group in in_use}
            # The machines that reach balancers (sandbox.network.reach) follow the listeners.
            self.listeners = wanted
            changed = reach.update(wanted)
            seq = self.fronts.send({"listeners": wanted, "groups": groups,
                                    "clients": reach.clients()})
        if wait and seq:
            self.fronts.wait(seq, wait)
        if wait and changed:
            reach.wait(changed, wait)
        return in_use

    def follow(self) -> None:
        """After an API call that may have changed what the proxies judge by (a security group,
        an attribute, a target): they have it before the call returns."""
        if self._listening:
            self.reconcile()

    def _group(self, group, balancers: list[str]) -> dict:
        """A target group as the proxies need it: its targets, where each is, whether it is
        healthy, and which of the balancers its security groups drop."""
        from sandbox.aws.ec2 import security_groups

        found = []
        for target in list(group.targets.values()):
            target_id, port = target["Id"], int(target["Port"])
            where = targets.endpoint(group.target_type, target_id, port)
            entry = {"id": target_id, "port": port,
                     "healthy": self.health.healthy(group.arn, target_id), "endpoint": None}
            if where is not None and where.opener is None:
                entry["endpoint"] = ["ip", where.host, where.port]
            elif where is not None:
                entry["endpoint"] = ["instance", target_id, where.host, where.port]
                entry["dropped"] = [lb for lb in balancers
                                    if not security_groups.admits(group.arn, (lb,), target_id,
                                                                  port)]
            found.append(entry)
        return {"targets": found}


def _listener(where: tuple[str, str], lb, listener) -> dict:
    """What the proxies need of a listener (plain data, for the load balancers' process)."""
    from sandbox.aws.ec2 import security_groups

    certificate = _tls(listener)
    admitted, said = security_groups.client_cidrs(where, lb.arn, int(listener.port))
    own, admitted_groups = security_groups.client_groups(where, lb.arn, int(listener.port))
    rules = [r for r in list(listener.rules.values()) if not getattr(r, "is_default", False)]
    rules.sort(key=lambda r: int(r.priority))
    return {"where": list(where), "lb": lb.arn, "host": lb.dns_name,
            "internal": lb.scheme == "internal", "vpc": lb.vpc_id,
            "groups": own, "admitted_groups": admitted_groups,
            "subnets": [subnet.cidr_block for subnet in lb.subnets],
            "port": int(listener.port), "certificate": certificate,
            "tls": _material(where, certificate) if certificate else None,
            "attributes": dict(lb.attrs), "admitted": admitted, "groups_said": said,
            "rules": [{"conditions": list(rule.conditions or []),
                       "actions": _actions(rule.arn, rule.actions)} for rule in rules],
            "default": _actions(f"{listener.arn} default", listener.default_actions)}


def _actions(owner: str, actions) -> list[dict]:
    return [{"id": f"{owner} {n}", "type": action.type, "data": action.data}
            for n, action in enumerate(actions or [])]


def _material(where: tuple[str, str], certificate: str) -> list[str] | None:
    try:
        return proxy.certificate(where, certificate)
    except Exception:  # noqa: BLE001 - a certificate gone: the listener says it cannot listen
        return None


def _tls(listener) -> str | None:
    """The certificate an HTTPS listener serves (None: plain HTTP)."""
    return listener.certificate if listener.protocol == "HTTPS" else None


def _forwarded(backend, listener) -> list[str]:
    arns = []
    for rule in list(listener.rules.values()):
        for action in rule.actions:
            if action.type == "forward":
                arns += backend._get_target_group_arns_from(action_data=action.data)
    return arns


def _unique(in_use: list) -> list:
    seen, unique = set(), []
    for where, lb, group in in_use:
        if (lb, group.arn) not in seen:
            seen.add((lb, group.arn))
            unique.append((where, lb, group))
    return unique
