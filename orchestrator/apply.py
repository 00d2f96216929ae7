"""Apply a plan step by step, checking health before any group gets traffic or loses it."""

from __future__ import annotations

import time
from collections.abc import Callable

from cloud.console import say
from cloud.errors import KilnError
from orchestrator import cluster as model
from orchestrator import groups, health, judge
from orchestrator.environment import Environment
from orchestrator.images import Image
from orchestrator.plan import Plan, Rules, Step

Observer = Callable[[Step, "Runner"], None]
RENEW_EVERY = 60  # seconds between lease renewals during long waits


class Runner:
    def __init__(self, env: Environment, plan: Plan, rules: Rules, run_id: str,
                 lease=None, observer: Observer | None = None):
        self.env = env
        self.plan = plan
        self.rules = rules
        self.run_id = run_id
        self.lease = lease
        self.observer = observer
        self.done: list[Step] = []
        self._target_groups: dict[str, str] = {}
        self.judgement: dict | None = None  # the last judgement of a new group vs the baseline
        self._renewed = time.monotonic()

    def run(self) -> None:
        total = len(self.plan.steps)
        for number, step in enumerate(self.plan.steps, 1):
            say(f"[{number}/{total}] {step.describe()}")
            getattr(self, f"_{step.action}")(step)
            self.done.append(step)
            self.tick(force=True)
            if self.observer:
                self.observer(step, self)

    def tick(self, force: bool = False) -> None:
        """Keep the lease alive during long waits (and after every step)."""
        if self.lease and (force or time.monotonic() - self._renewed > RENEW_EVERY):
            self.lease.renew()
            self._renewed = time.monotonic()

    # -- steps -------------------------------------------------------------------------------
    def _create(self, step: Step) -> None:
        image = Image(step.image["id"], step.image["version"], "", step.image.get("release"))
        history = {model.REPLACES: step.replaces or ""} if step.replaces is not None else None
        groups.create(self.env, step.group, image, step.instance_type, step.capacity,
                      step.max_size, self.run_id, model.CANARY, extra_tags=history)

    def _scale(self, step: Step) -> None:
        groups.scale(self.env, step.group, step.capacity, step.max_size)

    def _wait_healthy(self, step: Step) -> None:
        health.wait_healthy(self.env, step.group, step.capacity, step.seconds, tick=self.tick)

    def _weights(self, step: Step) -> None:
        current = {self.target_group(name): name for name in step.weights}
        before = model.listener_weights(self.env)
        for arn, name in current.items():
            weight = step.weights[name]
            if weight > before.get(arn, 0):
                # Traffic only ever moves to a group that is healthy at its full capacity.
                needed = step.capacity or self.desired(name)
                health.require_healthy(self.env, name, needed)
        groups.set_weights(self.env, {arn: step.weights[name] for arn, name in current.items()})

    def _watch(self, step: Step) -> None:
        watcher = self._judge(step.group) if step.seconds > 0 else None
        try:
            health.watch(self.env, step.seconds, [step.group] if step.group else [],
                         tick=self.tick, judge=watcher)
        finally:
            if watcher and watcher.last:
                self.judgement = watcher.last
                say(judge.line(watcher.last))

    def _judge(self, name: str | None) -> judge.Watcher | None:
        """A judge of group `name` against the baseline, when there is one to compare with."""
        cluster = model.read(self.env)
        new, base = cluster.group(name) if name else None, cluster.baseline()
        if not (new and base and base.name != name and new.target_group_arn
                and base.target_group_arn):
            return None
        return judge.Watcher(self.env, (new.name, new.target_group_arn),
                             (base.name, base.target_group_arn),
                             judge.Thresholds.from_settings(self.env.settings))

    def _disable(self, step: Step) -> None:
        new, capacity = step.requires["group"], step.requires["capacity"]
        # Never disable the old group before the new one is healthy at full capacity.
        health.require_healthy(self.env, new, capacity)
        weights = model.listener_weights(self.env) if self.env.balanced else {}
        if weights and weights.get(self.target_group(step.group), 0):
            raise KilnError(f"refusing to disable {step.group}: it still has traffic")
        groups.set_states(self.env, step.states or {step.group: model.DISABLED, new: model.ACTIVE})
        if self.rules.disable_mode == "scale_down":
            groups.schedule_scale_down(self.env, step.group, self.rules.disable_delay)

    def _mark(self, step: Step) -> None:
        groups.set_states(self.env, step.states)

    def _delete(self, step: Step) -> None:
        asg = model.describe_group(self.env, step.group)
        if asg is None:
            return
        tg = (asg.get("TargetGroupARNs") or [None])[0]
        if tg and model.listener_weights(self.env).get(tg):
            raise KilnError(f"refusing to delete {step.group}: it still has traffic")
        template = (asg.get("LaunchTemplate") or {}).get("LaunchTemplateId")
        groups.delete(self.env, step.group, tg, template)

    def _delete_orphans(self, step: Step) -> None:
        for arn in step.resources["target_groups"]:
            groups.delete_target_group(self.env, arn)
        for template in step.resources["launch_templates"]:
            groups.delete_launch_template(self.env, template)

    # -- lookups -----------------------------------------------------------------------------
    def target_group(self, name: str) -> str:
        if name not in self._target_groups:
            asg = model.describe_group(self.env, name)
            if asg is None or not asg.get("TargetGroupARNs"):
                raise KilnError(f"server group {name} has no target group in {self.env.where}")
            self._target_groups[name] = asg["TargetGroupARNs"][0]
        return self._target_groups[name]

    def desired(self, name: str) -> int:
        asg = model.describe_group(self.env, name)
        return asg["DesiredCapacity"] if asg else 0
