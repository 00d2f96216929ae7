"""Waiting for a server group to be healthy, and watching the alarms that judge a canary.

Both poll with exponential backoff (tenacity) up to a deadline: never a fixed tight loop.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn
from tenacity import retry, retry_if_result, stop_after_delay, wait_exponential

from cloud.console import say
from cloud.errors import KilnError
from cloud.inputs import human
from orchestrator import cluster as model
from orchestrator import groups
from orchestrator.environment import Environment
from orchestrator.judge import Watcher


class Unhealthy(KilnError):
    """A server group did not become healthy in time, or is not healthy when it must be."""


class AlarmFired(KilnError):
    """An alarm that judges the canary went into ALARM during a watch."""

    def __init__(self, names: list[str]):
        super().__init__(f"alarm {', '.join(names)} in ALARM")
        self.names = names


def healthy_count(env: Environment, name: str) -> tuple[int, int, list[str]]:
    """(healthy instances, desired capacity, reasons for the others) of one server group."""
    asg = model.describe_group(env, name)
    if asg is None:
        raise Unhealthy(f"server group {name} does not exist in {env.where}")
    tg = (asg.get("TargetGroupARNs") or [None])[0]
    healthy, reasons = model.healthy_instances(env, asg, tg)
    return len(healthy), asg["DesiredCapacity"], reasons


def require_healthy(env: Environment, name: str, capacity: int) -> None:
    """Fail unless the group has at least `capacity` (and at least one) healthy instances."""
    healthy, _desired, reasons = healthy_count(env, name)
    if healthy < max(1, capacity):
        detail = f": {'; '.join(reasons[:3])}" if reasons else ""
        raise Unhealthy(f"server group {name} has {healthy} healthy of {capacity} needed{detail}")


def wait_healthy(env: Environment, name: str, capacity: int, timeout: int,
                 tick: Callable[[], None] | None = None) -> None:
    """Wait until `capacity` instances are InService and healthy in the group's target group
    (or, for a group without one, in Auto Scaling's EC2 health). Progress is printed as it
    changes; when every target has failed its checks for longer than the target group's own
    failure window (interval × unhealthy threshold), the wait ends early."""
    state = {"healthy": 0, "reasons": []}
    progress = HealthProgress(env, name, capacity)

    def short() -> bool:
        if tick:
            tick()
        state["healthy"], _desired, state["reasons"] = healthy_count(env, name)
        progress.show(state["healthy"], state["reasons"])
        progress.check_failing(state["healthy"], state["reasons"])
        progress.check_abandoned()
        return state["healthy"] < capacity

    retry(retry=retry_if_result(bool), wait=wait_exponential(0.25, max=15),
          stop=stop_after_delay(timeout), retry_error_callback=lambda _: True)(short)()
    if state["healthy"] < capacity:
        detail = f": {'; '.join(state['reasons'][:3])}" if state["reasons"] else ""
        raise Unhealthy(f"server group {name}: {state['healthy']} of {capacity} instances "
                        f"InService and healthy after {human(timeout)}{detail}")


def _instance_of(activity: dict) -> str:
    """The instance id an Auto Scaling activity names ("…EC2 instance: i-… Status…")."""
    found = re.search(r"\bi-[0-9a-f]+\b", activity.get("Description", ""))
    return found.group(0) if found else "(unknown)"


class HealthProgress:
    """What a health wait prints, and when it gives up before its timeout."""

    SHOW_EVERY = 30  # seconds between two lines that say the same

    def __init__(self, env: Environment, name: str, capacity: int):
        self.env, self.name, self.capacity = env, name, capacity
        self.started = time.monotonic()
        self.last: tuple | None = None
        self.shown = 0.0
        self.all_failed_since: float | None = None
        self._window: float | None = None
        # Launches abandoned before this wait (an earlier wait's) are not this wait's failure.
        self.abandoned_before = {a["ActivityId"] for a in self.abandoned()}

    def abandoned(self) -> list[dict]:
        """The group's launches its launch hook abandoned (kiln.deploy.launch_check), newest
        first."""
        if not groups.health_command(self.env):
            return []
        activities = self.env.client("autoscaling").describe_scaling_activities(
            AutoScalingGroupName=self.name)["Activities"]
        return [a for a in activities if a.get("StatusCode") == "Cancelled"
                and "abandoned" in a.get("StatusMessage", "")]

    def check_abandoned(self) -> None:
        """Unhealthy at the first new instance whose health command failed (or never answered):
        Auto Scaling replaces it, but the version it runs is not healthy."""
        for activity in self.abandoned():
            if activity["ActivityId"] in self.abandoned_before:
                continue
            instance = _instance_of(activity)
            why = ("did not answer within kiln.deploy.launch_check.heartbeat_timeout"
                   if "Heartbeat Timeout" in activity["StatusMessage"] else "failed")
            raise Unhealthy(f"server group {self.name}: instance {instance} {why} its health "
                            f"command (kiln.deploy.launch_check.command), so Auto Scaling "
                            f"abandoned its launch; its boot output: `aws ec2 get-console-output "
                            f"--instance-id {instance}`")

    def show(self, healthy: int, reasons: list[str]) -> None:
        now = time.monotonic()
        summary = (healthy, tuple(reasons))
        if summary == self.last and now - self.shown < self.SHOW_EVERY:
            return
        self.last, self.shown = summary, now
        waited = human(int(now - self.started))
        others = f"; {', '.join(reasons[:4])}" if reasons else ""
        say(f"health: {self.name} {healthy}/{self.capacity} healthy after {waited}{others}")

    def check_failing(self, healthy: int, reasons: list[str]) -> None:
        """Unhealthy once every target has been failing for longer than the failure window."""
        failing = healthy == 0 and reasons and all(
            r.split(" ", 2)[1:2] == ["unhealthy"] for r in reasons)
        if not failing:
            self.all_failed_since = None
            return
        now = time.monotonic()
        if self.all_failed_since is None:
            self.all_failed_since = now
        window = self.window()
        if window is not None and now - self.all_failed_since > window:
            raise Unhealthy(f"server group {self.name}: every target has failed its health "
                            f"checks for over {human(int(window))} (the target group's "
                            f"interval × unhealthy threshold): {'; '.join(reasons[:3])}")

    def window(self) -> float | None:
        """The target group's interval × unhealthy threshold in seconds (None: no target
        group, so Auto Scaling replaces a failed instance itself)."""
        if self._window is None:
            asg = model.describe_group(self.env, self.name) or {}
            arns = asg.get("TargetGroupARNs") or []
            if not arns:
                return None
            group = self.env.client("elbv2").describe_target_groups(
                TargetGroupArns=arns[:1])["TargetGroups"][0]
            self._window = float(group.get("HealthCheckIntervalSeconds", 30)
                                 * group.get("UnhealthyThresholdCount", 2))
        return self._window


def alarm_states(env: Environment, names: list[str]) -> dict[str, str]:
    """Each alarm's state (OK, ALARM, INSUFFICIENT_DATA; "missing" for one that does not exist).

    Metric and composite alarms both: without AlarmTypes, AWS returns metric alarms only."""
    states = dict.fromkeys(names, "missing")
    cloudwatch = env.client("cloudwatch")
    for start in range(0, len(names), 100):
        alarms = cloudwatch.describe_alarms(AlarmNames=names[start:start + 100],
                                            AlarmTypes=["MetricAlarm", "CompositeAlarm"])
        states.update({a["AlarmName"]: a["StateValue"]
                       for a in alarms["MetricAlarms"] + alarms["CompositeAlarms"]})
    return states


def alarms_in_alarm(env: Environment, names: list[str]) -> list[str]:
    return [name for name, state in alarm_states(env, names).items() if state == "ALARM"]


def require_alarms(env: Environment) -> None:
    """Fail unless every alarm that judges the cluster exists (a typo would judge nothing)."""
    missing = [n for n, state in alarm_states(env, env.alarm_names).items() if state == "missing"]
    if missing:
        raise KilnError(f"alarm {', '.join(missing)} not found in account "
                        f"{env.aws.account_name}, {env.region} (kiln.deploy.alarms or the "
                        f"AlarmNames output of stack {env.stack_name})")


def watch(env: Environment, seconds: int, groups: list[str],
          tick: Callable[[], None] | None = None,
          judge: Watcher | None = None) -> None:
    """For `seconds`: raise AlarmFired on any alarm in ALARM, Unhealthy if a group degrades;
    `judge` (the new group against the baseline) raises when its verdict fails, and without a
    verdict at the end waits for one (judge.Watcher.await_verdict).
    Each check is shown: a countdown line on a terminal, one line per check otherwise."""
    if seconds <= 0:
        return
    deadline = time.monotonic() + seconds
    display = WatchDisplay(env.alarm_names, seconds)

    def check() -> bool:
        if tick:
            tick()
        states = alarm_states(env, env.alarm_names)
        health = {name: healthy_count(env, name) for name in groups}
        display.show(max(0.0, deadline - time.monotonic()), states, health)
        firing = [name for name, state in states.items() if state == "ALARM"]
        if firing:
            raise AlarmFired(firing)
        if judge:
            judge()
        for name, (healthy, desired, reasons) in health.items():
            if healthy < desired:
                raise Unhealthy(f"server group {name} degraded to {healthy} of {desired} "
                                f"healthy during the watch: {'; '.join(reasons[:3])}")
        return time.monotonic() < deadline

    backoff = wait_exponential(0.5, min=1, max=30)

    def wait(state) -> float:  # backoff from 1s up to 30s, never past the deadline
        return max(0.0, min(backoff(state), deadline - time.monotonic()))

    with display:
        retry(retry=retry_if_result(bool), wait=wait, stop=stop_after_delay(seconds),
              retry_error_callback=lambda _: None)(check)()
        check_final = alarms_in_alarm(env, env.alarm_names)
        if check_final:
            raise AlarmFired(check_final)
        if judge:
            judge()
            # The watch's time is up; a judge without a verdict yet keeps the alarms and health
            # checked while it waits for the evidence (and fails without it).
            judge.await_verdict(between=lambda: _still_fine(env, groups, tick))
    say(f"watch passed: {display.checks} checks in {human(seconds)}, no alarm in ALARM"
        + (f", {', '.join(groups)} healthy" if groups else ""))


def _still_fine(env: Environment, groups: list[str], tick: Callable[[], None] | None) -> None:
    """The watch's checks once more: no alarm in ALARM, every group at its capacity."""
    if tick:
        tick()
    firing = alarms_in_alarm(env, env.alarm_names)
    if firing:
        raise AlarmFired(firing)
    for name in groups:
        healthy, desired, reasons = healthy_count(env, name)
        if healthy < desired:
            raise Unhealthy(f"server group {name} degraded to {healthy} of {desired} healthy "
                            f"during the watch: {'; '.join(reasons[:3])}")


class WatchDisplay:
    """A countdown with the alarms' states on a terminal; a line per check in a log (CI)."""

    def __init__(self, alarms: list[str], seconds: int):
        self.checks = 0
        self.progress = None
        say(f"watch: alarms {', '.join(alarms) or '(none)'} and group health for {human(seconds)}")
        if sys.stderr.isatty():
            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                     console=Console(stderr=True), transient=True)

    def __enter__(self):
        if self.progress:
            self.progress.start()
            self.task = self.progress.add_task("watch")
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.stop()

    def show(self, left: float, alarms: dict[str, str], health: dict[str, tuple]) -> None:
        self.checks += 1
        parts = [f"{name} {state}" for name, state in alarms.items()]
        parts += [f"{name} {healthy}/{desired} healthy"
                  for name, (healthy, desired, _reasons) in health.items()]
        text = f"{human(int(round(left)))} left: {', '.join(parts) or 'nothing to read'}"
        if self.progress:
            self.progress.update(self.task, description=f"watch {text}")
        else:
            say(f"watch check {self.checks}, {text}")
