"""Metric alarms evaluated as CloudWatch evaluates them, on the sandbox's clock.

At the end of each of an alarm's periods the last EvaluationPeriods periods are read: the
statistic (Statistic, or a pNN ExtendedStatistic) of the metric with exactly the alarm's
namespace, name and dimensions, compared with the threshold. DatapointsToAlarm (default:
EvaluationPeriods) breaching periods put it in ALARM. Periods without data count as
TreatMissingData says: `notBreaching` good, `breaching` bad, `ignore` leave the state as it is
while nothing says otherwise, `missing` (default) left out, INSUFFICIENT_DATA when all are
missing. A state set with SetAlarmState holds until the next evaluation, at least one period
later, as on AWS. Alarms on metric math (Metrics) are left alone.
"""

from __future__ import annotations

import json
import math
import threading
from datetime import UTC, datetime

from sandbox import clock

COMPARE = {
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
    "GreaterThanThreshold": lambda v, t: v > t,
    "LessThanThreshold": lambda v, t: v < t,
    "LessThanOrEqualToThreshold": lambda v, t: v <= t,
}


def statistic(name: str, values: list[float]) -> float | None:
    """A CloudWatch statistic of single values: SampleCount, Sum, Average, Minimum, Maximum,
    or a percentile pNN (nearest rank, as CloudWatch computes on raw values)."""
    if not values:
        return None
    if name.startswith("p"):
        rank = float(name[1:]) / 100
        ordered = sorted(values)
        return ordered[max(0, math.ceil(rank * len(ordered)) - 1)]
    return {"SampleCount": lambda: float(len(values)), "Sum": lambda: sum(values),
            "Average": lambda: sum(values) / len(values), "Minimum": lambda: min(values),
            "Maximum": lambda: max(values)}[name]()


def values_of(datum) -> list[float]:
    """The single values a datum stands for (aggregated ones count by their average)."""
    if hasattr(datum, "value"):
        return [datum.value]
    count = int(datum.sample_count or 0)
    return [datum.sum / count] * count if count else []


class Evaluator:
    def __init__(self):
        self._lock = threading.Lock()
        self._evaluated: dict[str, float] = {}  # alarm ARN → end of the last evaluated period

    def run(self, backends) -> None:
        now = clock.now()
        for backend in backends:
            for alarm in list(backend.alarms.values()):
                if alarm.metric_data_queries or not alarm.metric_name:
                    continue
                self._maybe_evaluate(backend, alarm, now)

    def _maybe_evaluate(self, backend, alarm, now: float) -> None:
        length = clock.real(alarm.period or 60)
        end = now - now % length
        with self._lock:
            last = self._evaluated.get(alarm.alarm_arn)
            if last is not None and end <= last:
                return
            self._evaluated[alarm.alarm_arn] = end
        set_by_hand = _timestamp(alarm.state_updated_timestamp)
        if not alarm.state_reason.startswith(_HAND) and set_by_hand > end - length:
            return  # set with SetAlarmState during the last period: held until the next one
        state, reason, data = evaluate(backend, alarm, end, length)
        if state and state != alarm.state_value:
            alarm.update_state(reason, json.dumps(data), state)

    def forget(self) -> None:
        with self._lock:
            self._evaluated.clear()


_HAND = "Threshold Crossed"  # our own reasons start with this; others were set by a caller


def evaluate(backend, alarm, end: float, length: float):
    """(state or None to keep, reason, reason data) over the periods ending at `end`."""
    periods = int(alarm.evaluation_periods)
    needed = int(alarm.datapoints_to_alarm or periods)
    stat = alarm.extended_statistic or alarm.statistic or "Average"
    start = end - periods * length
    buckets: list[list[float]] = [[] for _ in range(periods)]
    wanted = sorted((d.name, d.value) for d in alarm.dimensions)
    for datum in list(backend.metric_data):
        if datum.namespace != alarm.namespace or datum.name != alarm.metric_name:
            continue
        if sorted((d.name, d.value) for d in datum.dimensions) != wanted:
            continue
        when = _timestamp(datum.timestamp)
        if start <= when < end:
            buckets[int((when - start) // length)] += values_of(datum)
    points = [statistic(stat, values) for values in buckets]
    compare = COMPARE[alarm.comparison_operator]
    missing = alarm.treat_missing_data or "missing"
    breaching = sum(1 for p in points if p is not None and compare(p, alarm.threshold))
    present = sum(1 for p in points if p is not None)
    if missing == "breaching":
        breaching += periods - present
    data = {"version": "1.0", "statistic": stat, "period": alarm.period,
            "recentDatapoints": [p for p in points if p is not None],
            "threshold": alarm.threshold}
    if breaching >= needed:
        return "ALARM", (f"{_HAND}: {breaching} out of the last {periods} datapoints were "
                         f"{alarm.comparison_operator} the threshold ({alarm.threshold})."), data
    if present == 0 and missing == "missing":
        return "INSUFFICIENT_DATA", (f"{_HAND}: no datapoints were received for "
                                     f"{periods} periods."), data
    if present == 0 and missing == "ignore":
        return None, "", data
    return "OK", (f"{_HAND}: {breaching} out of the last {periods} datapoints were "
                  f"{alarm.comparison_operator} the threshold ({alarm.threshold})."), data


def _timestamp(value) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()
