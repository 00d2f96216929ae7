"""The metrics an Application Load Balancer publishes, counted by the proxies.

Each period (60 s of AWS time, `clock`) they go into the sandbox's CloudWatch, namespace
AWS/ApplicationELB, by load balancer (`LoadBalancer=app/<name>/<id>`) and by target group
(`TargetGroup=targetgroup/<name>/<id>`, `LoadBalancer=…`): RequestCount,
HTTPCode_Target_2XX/3XX/4XX/5XX_Count, HTTPCode_ELB_4XX/5XX_Count and TargetResponseTime (each
response's seconds, so percentiles can be taken) when there was traffic; HealthyHostCount and
UnHealthyHostCount of every target group a listener forwards to, every period.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from datetime import UTC, datetime

from sandbox import clock

NAMESPACE = "AWS/ApplicationELB"
PERIOD = 60  # seconds of AWS time


def load_balancer_dimension(arn: str) -> str:
    return arn.split(":loadbalancer/", 1)[1]


def target_group_dimension(arn: str) -> str:
    return arn.rsplit(":", 1)[1]


class Metrics:
    """Counts since the last publish, per (account, region) and dimension set."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[tuple, Counter] = defaultdict(Counter)
        self._times: dict[tuple, Counter] = defaultdict(Counter)
        self._period_start = self._period(clock.now())

    @staticmethod
    def _period(now: float) -> float:
        length = clock.real(PERIOD)
        return now - now % length

    def record(self, where: tuple[str, str], lb_arn: str, tg_arn: str | None,
               target_status: int | None, elb_status: int | None,
               seconds: float | None) -> None:
        """One request: the target's answer (or None) or the load balancer's own status."""
        lb = (("LoadBalancer", load_balancer_dimension(lb_arn)),)
        keys = [lb]
        if tg_arn:
            keys.append((("LoadBalancer", lb[0][1]),
                         ("TargetGroup", target_group_dimension(tg_arn))))
        with self._lock:
            for dims in keys:
                counts = self._counts[(*where, dims)]
                counts["RequestCount"] += 1
                if target_status is not None:
                    counts[f"HTTPCode_Target_{target_status // 100}XX_Count"] += 1
                    self._times[(*where, dims)][round(seconds, 4)] += 1
                if elb_status is not None and dims is lb:
                    counts[f"HTTPCode_ELB_{elb_status // 100}XX_Count"] += 1

    def due(self) -> bool:
        return clock.now() >= self._period_start + clock.real(PERIOD)

    def publish(self, hosts: list[tuple[str, str, str, str, int, int]]) -> None:
        """Put the finished period's data into CloudWatch; `hosts` are (account, region, lb
        ARN, target group ARN, healthy, unhealthy) for every target group in use."""
        with self._lock:
            counts, self._counts = self._counts, defaultdict(Counter)
            times, self._times = self._times, defaultdict(Counter)
            stamp = datetime.fromtimestamp(self._period_start, UTC).replace(tzinfo=None)
            self._period_start = self._period(clock.now())
        data: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for (account, region, dims), counter in counts.items():
            for name, value in sorted(counter.items()):
                data[(account, region)].append(_datum(name, dims, stamp, value, "Count"))
        for (account, region, dims), values in times.items():
            datum = _datum("TargetResponseTime", dims, stamp, None, "Seconds")
            datum.update(Values=list(values), Counts=[float(n) for n in values.values()])
            data[(account, region)].append(datum)
        for account, region, lb_arn, tg_arn, healthy, unhealthy in hosts:
            dims = (("LoadBalancer", load_balancer_dimension(lb_arn)),
                    ("TargetGroup", target_group_dimension(tg_arn)))
            data[(account, region)] += [_datum("HealthyHostCount", dims, stamp, healthy, "Count"),
                                        _datum("UnHealthyHostCount", dims, stamp, unhealthy,
                                               "Count")]
        from moto.cloudwatch.models import cloudwatch_backends

        for (account, region), metric_data in data.items():
            backend = cloudwatch_backends[account][region]
            for start in range(0, len(metric_data), 1000):
                backend.put_metric_data(NAMESPACE, metric_data[start:start + 1000])

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()
            self._times.clear()


def _datum(name: str, dims: tuple, stamp: datetime, value, unit: str) -> dict:
    datum = {"MetricName": name, "Dimensions": [{"Name": k, "Value": v} for k, v in dims],
             "Timestamp": stamp, "Unit": unit}
    if value is not None:
        datum["Value"] = float(value)
    return datum
