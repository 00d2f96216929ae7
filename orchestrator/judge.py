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
("waiting"). A watch that ends without one goes on, for at most `max_wait`, until the evidence is
in; still none, it fails (`no_verdict: fail`, the default): a gate that opens for lack of
evidence is no gate. Thresholds: `kiln.deploy.canary.judge`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tenacity import retry, retry_if_result, stop_after_delay, wait_exponential

from cloud.console import say
from cloud.errors import KilnError
from cloud.inputs import human, seconds

NAMESPACE = "AWS/ApplicationELB"
PASS, FAIL, WAITING = "pass", "fail", "waiting"


class CanaryFailed(KilnError):
    """The judgement of the new group against the baseline failed."""

    def __init__(self, judgement: dict):
        super().__init__("judgement: " + "; ".join(judgement["reasons"]))
        self.judgement = judgement


class NoVerdict(CanaryFailed):
    """The watch, and the wait for evidence after it, ended without enough canary requests."""

    def __init__(self, judgement: dict, waited: int):
        KilnError.__init__(self, f"judgement: no verdict after {human(waited)} more of watching: "
                           + "; ".join(judgement["reasons"])
                           + " (kiln.deploy.canary.judge.no_verdict: fail)")
        self.judgement = judgement


@dataclass(frozen=True)
class Thresholds:
    min_requests: int
    max_error_rate_increase: float
    max_p99_ratio: float
    min_p99_increase: float
    max_wait: int = 600    # seconds a watch goes on past its end for a verdict's evidence
    no_verdict: str = "fail"   # what a watch without a verdict is then: fail or pass

    @classmethod
    def from_settings(cls, settings) -> Thresholds:
        judge = settings.deploy.canary.judge
        return cls(int(judge.min_requests), float(judge.max_error_rate_increase),
                   float(judge.max_p99_ratio), float(judge.min_p99_increase),
                   seconds(judge.max_wait, "kiln.deploy.canary.judge.max_wait"),
                   judge.no_verdict)


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

    def __init__(self, cloudwatch, load_balancer: str, canary: tuple[str, str],
                 baseline: tuple[str, str], limits: Thresholds):
        self.cloudwatch = cloudwatch
        self.canary = canary
        self.baseline = baseline
        self.limits = limits
        self.load_balancer = load_balancer
        self.since = datetime.now(UTC)
        self.last: dict | None = None

    @classmethod
    def of_cluster(cls, env, canary: tuple[str, str], baseline: tuple[str, str],
                   limits: Thresholds) -> Watcher:
        return cls(env.client("cloudwatch"), load_balancer_dimension(env), canary, baseline,
                   limits)

    def __call__(self) -> None:
        self.last = judge(self.cloudwatch, self.load_balancer, self.canary, self.baseline,
                          self.since, self.limits)
        if self.last["verdict"] == FAIL:
            raise CanaryFailed(self.last)

    @property
    def waiting(self) -> bool:
        return self.last is None or self.last["verdict"] == WAITING

    def await_verdict(self, between: Callable[[], None] | None = None) -> None:
        """After the watch: judge again (and run `between`, the alarm and health checks) until
        there is a verdict or `max_wait` has passed; then no verdict fails unless
        `no_verdict: pass`. A failing verdict raises CanaryFailed as during the watch."""
        if not self.waiting:
            return
        limit = self.limits.max_wait
        say(f"judgement: no verdict yet ({'; '.join(self.last['reasons']) if self.last else '-'}"
            f"); watching up to {human(limit)} more for the evidence")
        started = time.monotonic()
        deadline = started + limit

        def again() -> bool:
            if between:
                between()
            self()
            return self.waiting and time.monotonic() < deadline

        backoff = wait_exponential(0.5, min=1, max=30)
        retry(retry=retry_if_result(bool), stop=stop_after_delay(limit),
              wait=lambda state: max(0.0, min(backoff(state), deadline - time.monotonic())),
              retry_error_callback=lambda _: None)(again)()
        if not self.waiting:
            return
        waited = int(round(time.monotonic() - started))
        if self.limits.no_verdict == "fail":
            raise NoVerdict(self.last, waited)
        say(f"judgement: no verdict after {human(waited)} more; passed anyway, as "
            "kiln.deploy.canary.judge.no_verdict: pass says")
