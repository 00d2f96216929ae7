"""One thread in the moto server that keeps the network in step with what the APIs say.

Every tick it starts a proxy for each new listener and stops those whose listener or load
balancer is gone (after a reset: all of them), runs the health checks that are due, publishes
each period's metrics and evaluates the alarms. Listener changes made through the API also
reconcile at once, so a listener answers as soon as CreateListener returns.
"""

from __future__ import annotations

import itertools
import sys
import threading
import traceback

from sandbox.network import alarms, front, health, metrics, proxy, targets

TICK = 0.2  # real seconds between rounds


class Network:
    def __init__(self):
        self.health = health.HealthChecks()
        self.metrics = metrics.Metrics()
        self.alarms = alarms.Evaluator()
        self.weighted = proxy.Weighted()
        self.pool = front.Pool()  # the worker threads of every listener's requests
        self._counters: dict[str, itertools.count] = {}
        self._listeners: dict[str, proxy.Listener] = {}
        self._failed: set[tuple] = set()
        self.balancers: dict[str, list[str]] = {}  # target group ARN -> balancers forwarding
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

    def round_robin(self, group_arn: str) -> itertools.count:
        counter = self._counters.get(group_arn)
        if counter is None:
            counter = self._counters.setdefault(group_arn, itertools.count())
        return counter

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.stop_all()

    def stop_all(self) -> None:
        with self._lock:
            for listener in self._listeners.values():
                listener.stop()
            self._listeners.clear()
            self._failed.clear()
            targets.set_listeners(())
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

        in_use = self.reconcile()
        self.health.run([group for _where, _lb, group in in_use], self.balancers)
        if self.metrics.due():
            self.metrics.publish([(*where, lb, group.arn, *self._host_counts(group))
                                  for where, lb, group in in_use])
        self.alarms.run([backend for _a, _r, backend in self._backends(cloudwatch_backends)])

    def _host_counts(self, group) -> tuple[int, int]:
        healthy = sum(1 for t in list(group.targets) if self.health.healthy(group.arn, t))
        return healthy, len(group.targets) - healthy

    # -- listeners ---------------------------------------------------------------------------
    def reconcile(self) -> list[tuple[tuple[str, str], str, object]]:
        """Start and stop proxies to match the listeners; the target groups in use."""
        from moto.elbv2.models import elbv2_backends

        wanted: dict[str, tuple] = {}
        in_use = []
        for account, region, backend in self._backends(elbv2_backends):
            for lb in list(backend.load_balancers.values()):
                for listener in list(lb.listeners.values()):
                    wanted[listener.arn] = ((account, region), lb.arn, listener.arn,
                                            lb.dns_name, int(listener.port), _tls(listener))
                    for arn in _forwarded(backend, listener):
                        group = backend.target_groups.get(arn)
                        if group is not None:
                            in_use.append(((account, region), lb.arn, group))
        balancers: dict[str, list[str]] = {}
        for _where, lb_arn, group in in_use:
            balancers.setdefault(group.arn, []).append(lb_arn)
        self.balancers = balancers
        with self._lock:
            # Stop what is gone or changed first: a listener moved off a port frees it for the
            # one that takes it over (an HTTP listener becoming HTTPS beside its redirect).
            stale = [arn for arn, current in self._listeners.items() if arn not in wanted
                     or (*current.address, current.certificate) != wanted[arn][3:]]
            for arn in stale:
                self._listeners.pop(arn).stop()
            if stale:
                self._failed.clear()  # a port one of them held may be what another waited for
            for arn, spec in wanted.items():
                if arn not in self._listeners:
                    self._start(spec)
            targets.set_listeners(listener.address for listener in self._listeners.values())
        return _unique(in_use)

    def _start(self, spec: tuple) -> None:
        if spec in self._failed:
            return
        try:
            listener = proxy.Listener(self, *spec)
        except Exception as error:  # noqa: BLE001 - a port in use, a certificate gone: say so
            self._failed.add(spec)
            print(f"sandbox network: listener {spec[2]} cannot listen on {spec[3]}:{spec[4]}: "
                  f"{error}", file=sys.stderr, flush=True)
            return
        listener.start()
        self._listeners[spec[2]] = listener

    def listening(self) -> dict[str, tuple[str, int]]:
        with self._lock:
            return {arn: listener.address for arn, listener in self._listeners.items()}


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
