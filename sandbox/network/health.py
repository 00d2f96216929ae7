"""Target health checks as an Application Load Balancer runs them, and deregistration draining.

Every target of a target group that a listener forwards to, and that has an address
(`targets.endpoint`), is checked every HealthCheckIntervalSeconds: an HTTP GET of
HealthCheckPath on HealthCheckPort ("traffic-port": the target's port), answered within
HealthCheckTimeoutSeconds with a code the Matcher accepts ("200", "200,202", "200-299").
HealthyThresholdCount consecutive successes make a target `healthy` (from `initial` or
`unhealthy`), UnhealthyThresholdCount consecutive failures `unhealthy`, with AWS's reasons.
A deregistered target is `draining` for the group's deregistration_delay.timeout_seconds: it
gets no new requests, those in flight finish. Intervals and delays are time-scaled (`clock`);
a timeout is never shorter than one real second, so a busy machine does not fail a check.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sandbox import clock
from sandbox.network import targets

USER_AGENT = "ELB-HealthChecker/2.0"


@dataclass
class Record:
    state: str = "initial"
    reason: str | None = "Elb.RegistrationInProgress"
    description: str | None = "Target registration is in progress"
    successes: int = 0
    failures: int = 0
    due: float = 0.0


def accepts(matcher: dict | None, status: int) -> bool:
    """Whether an ALB matcher ({"HttpCode": "200,202" or "200-299"}) accepts `status`."""
    codes = (matcher or {}).get("HttpCode") or "200"
    for part in str(codes).split(","):
        low, _, high = part.strip().partition("-")
        if low.isdigit() and int(low) <= status <= int(high or low):
            return True
    return False


def probe(group, where: targets.Endpoint) -> tuple[bool, str | None, str | None]:
    """One health check: (passed, reason, description) as DescribeTargetHealth words them."""
    timeout = max(1.0, clock.real(group.health_check_timeout_seconds))
    connection = targets.Connection(where, timeout)
    try:
        connection.request("GET", group.health_check_path or "/", headers={
            "User-Agent": USER_AGENT, "Host": f"{where.host}:{where.port}"})
        response = connection.getresponse()
        response.read()  # the whole answer, as an ALB reads it: closing early resets the target
        status = response.status
    except TimeoutError:
        return False, "Target.Timeout", "Request timed out"
    except OSError:
        return False, "Target.FailedHealthChecks", "Health checks failed"
    finally:
        connection.close()
    if accepts(getattr(group, "matcher", None), status):
        return True, None, None
    return (False, "Target.ResponseCodeMismatch",
            f"Health checks failed with these codes: [{status}]")


def check_port(group, target_port: int) -> int:
    port = group.health_check_port
    return int(target_port) if port in (None, "traffic-port") else int(port)


class HealthChecks:
    """The health of every checked target, keyed by (target group ARN, target id)."""

    def __init__(self, workers: int = 8):
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], Record] = {}
        self._draining: dict[tuple[str, str], tuple[int, float]] = {}
        self._busy: set[tuple[str, str]] = set()
        # Checks run on daemon threads, at most `workers` at once, so that the server exits at
        # once when it is stopped, even with a check waiting on a slow target.
        self._slots = threading.BoundedSemaphore(workers)

    def record(self, group_arn: str, target_id: str) -> Record | None:
        with self._lock:
            return self._records.get((group_arn, target_id))

    def healthy(self, group_arn: str, target_id: str) -> bool:
        record = self.record(group_arn, target_id)
        return bool(record and record.state == "healthy")

    def run(self, groups: list, balancers: dict | None = None) -> None:
        """Start the checks that are due for the targets of the target groups in use;
        `balancers`: target group ARN -> the load balancers that forward to it (and check)."""
        now = clock.now()
        seen = set()
        for group in groups:
            if not group.health_check_enabled:
                continue
            for target in list(group.targets.values()):
                key = (group.arn, target["Id"])
                where = targets.endpoint(group.target_type, target["Id"],
                                         check_port(group, target["Port"]),
                                         (group.arn, tuple((balancers or {}).get(group.arn, ()))))
                if where is None:
                    continue
                seen.add(key)
                with self._lock:
                    record = self._records.setdefault(key, Record(due=now))
                    if now < record.due or key in self._busy:
                        continue
                    if not self._slots.acquire(blocking=False):
                        continue  # all workers busy: this one is due again next round
                    self._busy.add(key)
                    record.due = now + clock.real(group.health_check_interval_seconds)
                threading.Thread(target=self._check, args=(group, key, where), daemon=True,
                                 name="health-check").start()
        with self._lock:
            for key in set(self._records) - seen:
                del self._records[key]

    def _check(self, group, key: tuple[str, str], where: targets.Endpoint) -> None:
        try:
            passed, reason, description = probe(group, where)
            with self._lock:
                record = self._records.get(key)
                if record is not None:
                    _count(record, group, passed, reason, description)
        finally:
            with self._lock:
                self._busy.discard(key)
            self._slots.release()

    # -- draining --------------------------------------------------------------------------
    def drain(self, group, target_ids: list[tuple[str, int]]) -> None:
        delay = int(group.attributes.get("deregistration_delay.timeout_seconds", 300))
        until = clock.now() + clock.real(delay)
        with self._lock:
            for target_id, port in target_ids:
                self._records.pop((group.arn, target_id), None)
                if delay > 0:
                    self._draining[(group.arn, target_id)] = (int(port), until)

    def draining(self, group_arn: str) -> dict[str, int]:
        """Targets of the group still draining: id → port (expired ones are dropped)."""
        now = clock.now()
        with self._lock:
            for key in [k for k, (_p, until) in self._draining.items() if until <= now]:
                del self._draining[key]
            return {tid: port for (arn, tid), (port, _u) in self._draining.items()
                    if arn == group_arn}

    def undrain(self, group_arn: str, target_id: str) -> None:
        with self._lock:
            self._draining.pop((group_arn, target_id), None)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._draining.clear()


def _count(record: Record, group, passed: bool, reason, description) -> None:
    if passed:
        record.successes, record.failures = record.successes + 1, 0
        if record.state != "healthy" and record.successes >= int(group.healthy_threshold_count):
            record.state, record.reason, record.description = "healthy", None, None
        return
    record.failures, record.successes = record.failures + 1, 0
    if record.state == "unhealthy" or record.failures >= int(group.unhealthy_threshold_count):
        record.state, record.reason, record.description = "unhealthy", reason, description
