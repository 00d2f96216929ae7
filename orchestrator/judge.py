"""Judge a new server group against the baseline from the target groups' own metrics.

As Kayenta does, the canary is compared with the baseline over the same window, each from its
own target group's metrics (AWS/ApplicationELB by TargetGroup and LoadBalancer), so a 10 %
canary's errors are not drowned in the load balancer's total and the baseline's own errors do
not fail a good canary:

- error rate: HTTPCode_Target_5XX_Count / RequestCount; the canary fails when its rate is more
  than `max_error_rate_increase` above the baseline's;
- latency: TargetResponseTime p99; the canary fails when its p99 is more than `max_p99_ratio`
  times the baseline's and more than `min_p99_increase` seconds above it.

Until the canary has served `min_requests` requests in the window there is no verdict
("waiting"). Thresholds: `kiln.deploy.canary.judge`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cloud.errors import KilnError

NAMESPACE = "AWS/ApplicationELB"
PASS, FAIL, WAITING = "pass", "fail", "waiting"


class CanaryFailed(KilnError):
    """The judgement of the new group against the baseline failed."""

    def __init__(self, judgement: dict):
        super().__init__("judgement: " + "; ".join(judgement["reasons"]))
        self.judgement = judgement


@dataclass(frozen=True)
class Thresholds:
    min_requests: int
    max_error_rate_increase: float
    max_p99_ratio: float
    min_p99_increase: float

    @classmethod
    def from_settings(cls, settings) -> Thresholds:
        judge = settings.deploy.canary.judge
        return cls(int(judge.min_requests), float(judge.max_error_rate_increase),
                   float(judge.max_p99_ratio), float(judge.min_p99_increase))


def window(since: datetime, until: datetime) -> tuple[datetime, datetime, int]:
    """Whole minutes covering [since, until] and the period that makes them one datapoint."""
    start = since.astimezone(UTC).replace(second=0, microsecond=0)
    end = until.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    return start, end, int((end - start).total_seconds())


def measure(cloudwatch, load_balancer: str, target_groups: dict[str, str], since: datetime,
            until: datetime) -> dict[str, dict]:
    """Requests, 5xx, error rate and p99 of each target group (name → ARN) in the window."""
    start, end, period = window(since, until)
    queries, names = [], {}
    for index, (name, arn) in enumerate(target_groups.items()):
        dims = [{"Name": "TargetGroup", "Value": arn.rsplit(":", 1)[1]},
                {"Name": "LoadBalancer", "Value": load_balancer}]
        for key, metric, stat in (("requests", "RequestCount", "Sum"),
                                  ("errors", "HTTPCode_Target_5XX_Count", "Sum"),
                                  ("p99", "TargetResponseTime", "p99")):
            names[f"m{index}{key}"] = (name, key)
            queries.append({"Id": f"m{index}{key}", "ReturnData": True, "MetricStat": {
                "Metric": {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": dims},
                "Period": period, "Stat": stat}})
    found = {name: {"requests": 0, "errors": 0, "p99": None} for name in target_groups}
    results = cloudwatch.get_metric_data(
        MetricDataQueries=queries, StartTime=start, EndTime=end)["MetricDataResults"]
    for result in results:
        name, key = names[result["Id"]]
        values = result.get("Values") or []
        if values:
            found[name][key] = max(values) if key == "p99" else sum(values)
    for numbers in found.values():
        numbers["requests"] = int(numbers["requests"])
        numbers["errors"] = int(numbers["errors"])
        numbers["error_rate"] = (round(numbers["errors"] / numbers["requests"], 4)
                                 if numbers["requests"] else None)
    return found


def verdict(canary: dict, baseline: dict, limits: Thresholds) -> tuple[str, list[str]]:
    """(pass | fail | waiting, the reasons) of one comparison."""
    if canary["requests"] < limits.min_requests:
        return WAITING, [f"canary served {canary['requests']} of the {limits.min_requests} "
                         "requests needed for a verdict"]
    reasons = []
    base_rate = baseline["error_rate"] or 0.0
    if canary["error_rate"] > base_rate + limits.max_error_rate_increase:
        reasons.append(f"canary 5xx rate {canary['error_rate']:.2%} above the baseline's "
                       f"{base_rate:.2%} by more than {limits.max_error_rate_increase:.2%}")
    if canary["p99"] is not None and baseline["p99"] is not None:
        slower = canary["p99"] - baseline["p99"]
        if (canary["p99"] > baseline["p99"] * limits.max_p99_ratio
                and slower > limits.min_p99_increase):
            reasons.append(f"canary p99 {canary['p99']:.3f}s against the baseline's "
                           f"{baseline['p99']:.3f}s (more than {limits.max_p99_ratio}× and "
                           f"{limits.min_p99_increase}s slower)")
    return (FAIL, reasons) if reasons else (PASS, [])


def judge(cloudwatch, load_balancer: str, canary: tuple[str, str], baseline: tuple[str, str],
          since: datetime, limits: Thresholds, until: datetime | None = None) -> dict:
    """The judgement of `canary` (name, target group ARN) against `baseline` since `since`."""
    until = until or datetime.now(UTC)
    numbers = measure(cloudwatch, load_balancer, dict([canary, baseline]), since, until)
    state, reasons = verdict(numbers[canary[0]], numbers[baseline[0]], limits)
    return {"verdict": state, "reasons": reasons, "canary": {"group": canary[0],
            **numbers[canary[0]]}, "baseline": {"group": baseline[0], **numbers[baseline[0]]},
            "window": {"start": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "end": until.strftime("%Y-%m-%dT%H:%M:%SZ")},
            "thresholds": limits.__dict__}


def line(judgement: dict) -> str:
    """One line for people: both groups' numbers and the verdict."""

    def side(numbers: dict) -> str:
        rate = "-" if numbers["error_rate"] is None else f"{numbers['error_rate']:.2%}"
        p99 = "-" if numbers["p99"] is None else f"{numbers['p99'] * 1000:.0f}ms"
        return (f"{numbers['group']} {numbers['requests']} requests, {rate} 5xx, p99 {p99}")

    why = f" ({'; '.join(judgement['reasons'])})" if judgement["reasons"] else ""
    return (f"judgement: {judgement['verdict']}{why} — canary {side(judgement['canary'])}; "
            f"baseline {side(judgement['baseline'])}")


def load_balancer_dimension(env) -> str:
    """The LoadBalancer dimension (app/<name>/<id>) of the cluster's listener."""
    listener = env.client("elbv2").describe_listeners(
        ListenerArns=[env.listener_arn])["Listeners"][0]
    return listener["LoadBalancerArn"].split(":loadbalancer/", 1)[1]


class Watcher:
    """Judges one new group against the baseline since the watch began, each time it is
    called during the watch; raises CanaryFailed on a failing verdict, keeps the last one."""

    def __init__(self, env, canary: tuple[str, str], baseline: tuple[str, str],
                 limits: Thresholds):
        self.env = env
        self.canary = canary
        self.baseline = baseline
        self.limits = limits
        self.load_balancer = load_balancer_dimension(env)
        self.since = datetime.now(UTC)
        self.last: dict | None = None

    def __call__(self) -> None:
        self.last = judge(self.env.client("cloudwatch"), self.load_balancer, self.canary,
                          self.baseline, self.since, self.limits)
        if self.last["verdict"] == FAIL:
            raise CanaryFailed(self.last)
