"""Plans: the changes an operation makes, computed from the cluster's state as data.

`--dry-run` prints a plan; a real run applies the same plan (orchestrator.apply). Every builder
here is pure: it reads a Cluster and returns a Plan, so tests can check plans without AWS.

A cluster without a load balancer (a worker) has no listener and no traffic to shift: its plans
have the same create, health, watch and disable steps without the listener's, and a canary's
share is the canary's capacity beside the baseline's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from cloud.errors import KilnError
from cloud.inputs import human
from orchestrator import cluster as model
from orchestrator.cluster import Cluster, ServerGroup

MAX_FORWARD_TARGET_GROUPS = 5  # an ALB forward action takes at most five target groups


@dataclass
class Step:
    action: str  # create | scale | weights | wait_healthy | watch | disable | mark | delete
    group: str | None = None
    capacity: int | None = None
    max_size: int | None = None
    weights: dict[str, int] | None = None
    seconds: int | None = None
    states: dict[str, str] | None = None
    image: dict | None = None
    instance_type: str | None = None
    requires: dict | None = None  # disable: {"group": name, "capacity": n} healthy beforehand
    resources: dict | None = None  # delete_orphans: {"target_groups": [...], ...}
    replaces: str | None = None  # create: the group the new one is meant to replace (history)
    note: str = ""

    def describe(self) -> str:
        text = {
            "create": lambda: (f"create {self.group}: {_release_id(self.image)} "
                               f"({self.image['id']}), {self.instance_type}, capacity "
                               f"{self.capacity}"),
            "scale": lambda: f"scale {self.group} to {self.capacity}",
            "weights": lambda: "listener: " + ", ".join(
                f"{name} {weight}%" for name, weight in self.weights.items()),
            "wait_healthy": lambda: (f"wait until {self.group} has {self.capacity} InService and "
                                     f"healthy (timeout {human(self.seconds)})"),
            "watch": lambda: f"watch alarms and health for {human(self.seconds)}",
            "disable": lambda: (f"{self._ending()} {self.group} once {self.requires['group']} is "
                                f"healthy at {self.requires['capacity']}"),
            "mark": lambda: "tag " + ", ".join(f"{g} {s}" for g, s in self.states.items()),
            "delete": lambda: f"delete {self.group} with its launch template and target group",
            "delete_orphans": lambda: f"delete leftovers of interrupted creates: {self.note}",
        }[self.action]()
        return f"{text} — {self.note}" if self.note and self.action != "delete_orphans" else text

    def _ending(self) -> str:
        ending = (self.states or {}).get(self.group, model.DISABLED)
        return "disable" if ending == model.DISABLED else f"mark {ending}"

    def as_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if v not in (None, "", {})}
        data["text"] = self.describe()
        return data


def _release_id(image: dict) -> str:
    return f"{image['version']}-{image['release']}" if image.get("release") else image["version"]


@dataclass
class Plan:
    operation: str
    cluster: str
    steps: list[Step] = field(default_factory=list)
    new_group: str | None = None
    baseline: str | None = None
    summary: str = ""

    balanced: bool = True  # False: no listener, so weights steps are left out

    def add(self, action: str, **kwargs) -> Step | None:
        if action == "weights" and not self.balanced:
            return None
        step = Step(action, **kwargs)
        self.steps.append(step)
        return step

    def lines(self) -> list[str]:
        head = f"plan: {self.operation} {self.cluster}" + (f" — {self.summary}"
                                                           if self.summary else "")
        if not self.steps:
            return [head, "  nothing to do"]
        return [head] + [f"  {n}. {s.describe()}" for n, s in enumerate(self.steps, 1)]

    def as_dict(self) -> dict:
        return {"operation": self.operation, "cluster": self.cluster, "summary": self.summary,
                "new_group": self.new_group, "baseline": self.baseline,
                "steps": [s.as_dict() for s in self.steps]}


@dataclass(frozen=True)
class Rules:
    """The deploy settings a plan needs, already parsed (see orchestrator.operations.rules)."""

    instance_type: str
    desired: int
    max_size: int
    canary_capacity: str
    canary_min: int
    steps: list[int]
    watch: int
    health_timeout: int
    disable_mode: str
    disable_delay: int
    keep: int


def members(cluster: Cluster, changes: dict[str, int | None] | None = None) -> dict[str, int]:
    """The listener's groups after `changes` (group → weight; None removes it), in age order.

    The cap of five target groups applies to the merged result: the oldest groups at weight 0
    leave first, never one joining now, the serving group or the one a rollback returns to.
    """
    changes = changes or {}
    current = {g.name: g.weight for g in cluster.groups if g.weight is not None}
    weights = dict(current)
    for name, weight in changes.items():
        if weight is None:
            weights.pop(name, None)
        else:
            weights[name] = weight
    order = {g.name: g.sequence for g in cluster.groups}
    ordered = dict(sorted(weights.items(), key=lambda kv: order.get(kv[0], 10**6)))
    kept = {n for n in changes if n not in current} | _rollback_targets(cluster)
    idle = [name for name, weight in ordered.items() if weight == 0 and name not in kept]
    while len(ordered) > MAX_FORWARD_TARGET_GROUPS and idle:
        ordered.pop(idle.pop(0))  # the oldest idle group stops being health-checked
    return ordered


def _rollback_targets(cluster: Cluster) -> set[str]:
    """The serving group and the disabled one a rollback would return to."""
    baseline = cluster.baseline()
    if baseline is None:
        return set()
    previous = cluster.rollback_target(baseline)
    return {baseline.name} | ({previous.name} if previous else set())


def _shift(cluster: Cluster, weights: dict[str, int]) -> dict[str, int]:
    """Exactly these weights on the listener; every other group stays on it at 0."""
    return members(cluster, {**{n: 0 for n in members(cluster)}, **weights})


def _balanced(cluster: Cluster) -> bool:
    return cluster.env.balanced


def canary_capacity(rules: Rules, percent: int, baseline: ServerGroup) -> int:
    if rules.canary_capacity == "baseline":
        return baseline.desired
    return max(rules.canary_min, math.ceil(percent * baseline.desired / 100))


def _require_baseline(cluster: Cluster, what: str) -> ServerGroup:
    baseline = cluster.baseline()
    if baseline is None or not baseline.serving:
        raise KilnError(f"no baseline for a {what}: cluster {cluster.name} has no server group "
                        f"serving traffic in {cluster.env.where}; run `invoke deploy"
                        f"{_flags(cluster)} --version X` first")
    return baseline


def _flags(cluster: Cluster) -> str:
    """--app and --stack of the cluster, for the commands a hint names."""
    env = cluster.env
    stack = cluster.name[len(env.app) + 1:] if cluster.name != env.app else ""
    return f" --app {env.app}" + (f" --stack {stack}" if stack else "")


def _refuse_if_canary(cluster: Cluster, what: str) -> None:
    canary = cluster.canary()
    if canary is not None:
        raise KilnError(f"cluster {cluster.name} has a canary in progress ({canary.name}, "
                        f"{canary.version}): promote or rollback it before a {what}")


def _create(plan: Plan, cluster: Cluster, rules: Rules, image, capacity: int,
            replaces: ServerGroup | None) -> str:
    name = cluster.next_name()
    plan.new_group = name
    plan.add("create", group=name, capacity=capacity, max_size=max(rules.max_size, capacity),
             image={"id": image.id, "version": image.version, "release": image.release},
             instance_type=rules.instance_type,
             replaces=replaces.name if replaces else "")
    plan.add("weights", weights=members(cluster, {name: 0}),
             note=f"{name} joins at weight 0, so the load balancer health-checks it")
    plan.add("wait_healthy", group=name, capacity=capacity, seconds=rules.health_timeout)
    return name


def canary(cluster: Cluster, rules: Rules, image, percent: int) -> Plan:
    _refuse_if_canary(cluster, "canary")
    baseline = _require_baseline(cluster, "canary")
    capacity = canary_capacity(rules, percent, baseline)
    plan = Plan("canary", cluster.name, baseline=baseline.name, balanced=_balanced(cluster),
                summary=f"{image.release_id} at {percent}% beside {baseline.name} "
                        f"({baseline.release_id}, {baseline.desired} instances)"
                        + ("" if _balanced(cluster) else f": {capacity} instance(s), no load "
                                                         f"balancer"))
    name = _create(plan, cluster, rules, image, capacity, baseline)
    plan.add("weights", weights=_shift(cluster, {baseline.name: 100 - percent, name: percent}))
    if rules.watch > 0:  # --watch 0: no watch step at all
        plan.add("watch", seconds=rules.watch, group=name)
    return plan


def deploy(cluster: Cluster, rules: Rules, image) -> Plan:
    _refuse_if_canary(cluster, "deploy")
    baseline = cluster.baseline()
    if baseline is None or not baseline.serving:
        plan = Plan("deploy", cluster.name, summary=f"{image.release_id}, first server group",
                    balanced=_balanced(cluster))
        name = _create(plan, cluster, rules, image, rules.desired, None)
        plan.add("weights", weights=_shift(cluster, {name: 100}))
        plan.add("mark", states={name: model.ACTIVE})
        return plan
    if baseline.ami == image.id and (baseline.weight == 100 or not _balanced(cluster)):
        # Deploying what already serves all traffic is a no-op, so a rerun changes nothing.
        return Plan("deploy", cluster.name, baseline=baseline.name,
                    summary=f"{image.release_id} ({image.id}) already serves all traffic from "
                            f"{baseline.name}")
    plan = Plan("deploy", cluster.name, baseline=baseline.name, balanced=_balanced(cluster),
                summary=f"{image.release_id} replaces {baseline.name} ({baseline.release_id}), "
                        f"red/black at {baseline.desired} instances")
    name = _create(plan, cluster, rules, image, baseline.desired, baseline)
    _shift_steps(plan, cluster, rules, baseline, name, current=0)
    return plan


def _shift_steps(plan: Plan, cluster: Cluster, rules: Rules, old: ServerGroup, new: str,
                 current: int) -> None:
    if not plan.balanced and rules.watch > 0:  # no traffic to shift: both groups run, watched
        plan.add("watch", seconds=rules.watch, group=new)
    for percent in [p for p in rules.steps if p > current and plan.balanced]:
        plan.add("weights", weights=_shift(cluster, {old.name: 100 - percent, new: percent}))
        if percent < 100 and rules.watch > 0:
            plan.add("watch", seconds=rules.watch, group=new)
    plan.add("disable", group=old.name, requires={"group": new, "capacity": old.desired},
             states={old.name: model.DISABLED, new: model.ACTIVE}, note=_disable_note(rules))


def _disable_note(rules: Rules) -> str:
    if rules.disable_mode == "keep":
        return "kept at capacity for a fast rollback"
    return f"scaled to 0 after {human(rules.disable_delay)}"


def promote(cluster: Cluster, rules: Rules) -> Plan:
    new = cluster.canary()
    if new is None:
        raise KilnError(f"cluster {cluster.name} has no canary to promote in "
                        f"{cluster.env.where} (`invoke status{_flags(cluster)}` shows its groups)")
    baseline = cluster.baseline()
    if not (baseline and new.weight == 100 and not baseline.serving and _balanced(cluster)):
        baseline = _require_baseline(cluster, "promote")
    # Else a promote stopped after its last shift: only disabling the old group remains.
    capacity = baseline.desired
    plan = Plan("promote", cluster.name, new_group=new.name, baseline=baseline.name,
                balanced=_balanced(cluster),
                summary=f"{new.name} ({new.release_id}) replaces {baseline.name} "
                        f"({baseline.release_id}) at {capacity} instances")
    if new.desired < capacity:
        plan.add("scale", group=new.name, capacity=capacity, max_size=max(new.max_size, capacity))
    if new.weight is None:
        plan.add("weights", weights=members(cluster, {new.name: 0}),
                 note=f"{new.name} joins at weight 0, so the load balancer health-checks it")
    plan.add("wait_healthy", group=new.name, capacity=max(capacity, new.desired),
             seconds=rules.health_timeout)
    _shift_steps(plan, cluster, rules, baseline, new.name, current=new.weight or 0)
    return plan


def abort(cluster: Cluster, new: ServerGroup | str, reason: str,
          ending: str = model.FAILED) -> Plan:
    """Take a new group out: baseline back to full weight, new group at 0, scaled to 0, tagged
    `ending` (failed when its checks failed, rolled-back when a person took it out)."""
    name = new if isinstance(new, str) else new.name
    baseline = cluster.baseline()
    plan = Plan("rollback", cluster.name, new_group=name,
                baseline=baseline.name if baseline else None, summary=reason,
                balanced=_balanced(cluster))
    if baseline is not None and baseline.name != name:
        weights = members(cluster, {g: 0 for g in members(cluster)})
        weights.pop(name, None)
        weights[baseline.name] = 100
        # Taking traffic off a failing group must not wait for a perfect baseline.
        plan.add("weights", weights=weights, capacity=1)
    elif name in members(cluster) and len(members(cluster)) > 1:
        plan.add("weights", weights=members(cluster, {name: None}))
    plan.add("scale", group=name, capacity=0, max_size=0)
    plan.add("mark", states={name: ending})
    return plan


def rollback(cluster: Cluster, rules: Rules) -> Plan:
    canary_group = cluster.canary()
    if canary_group is not None:
        return abort(cluster, canary_group, f"take canary {canary_group.name} "
                                            f"({canary_group.release_id}) out", model.ROLLED_BACK)
    current = cluster.baseline()
    if current is None:
        raise KilnError(f"cluster {cluster.name} has nothing to roll back to: no server group "
                        f"serves it in {cluster.env.where}")
    previous = cluster.rollback_target(current)
    if previous is None:
        raise KilnError(f"cluster {cluster.name} has nothing to roll back to: "
                        f"{_replaced_what(cluster, current)}; nothing changed")
    capacity = current.desired
    plan = Plan("rollback", cluster.name, new_group=previous.name, baseline=current.name,
                balanced=_balanced(cluster),
                summary=f"back to {previous.name} ({previous.release_id}) from {current.name} "
                        f"({current.release_id}) at {capacity} instances")
    plan.add("scale", group=previous.name, capacity=capacity,
             max_size=max(previous.max_size, capacity), note="cancels any pending scale-down")
    if previous.weight is None:
        plan.add("weights", weights=members(cluster, {previous.name: 0}),
                 note=f"{previous.name} joins at weight 0, so the load balancer health-checks it")
    plan.add("wait_healthy", group=previous.name, capacity=capacity, seconds=rules.health_timeout)
    plan.add("weights", weights=_shift(cluster, {previous.name: 100, current.name: 0}))
    plan.add("disable", group=current.name, requires={"group": previous.name,
                                                       "capacity": capacity},
             states={current.name: model.ROLLED_BACK, previous.name: model.ACTIVE},
             note=_disable_note(rules))
    return plan


def _replaced_what(cluster: Cluster, current: ServerGroup) -> str:
    """Why the serving group has no rollback target, for the one-line error."""
    serving = f"{current.name} ({current.release_id})"
    if model.REPLACES not in current.tags:
        return f"no disabled server group older than {serving}"
    if not current.replaces:
        return f"{serving} replaced no server group (it was the cluster's first)"
    replaced = cluster.group(current.replaces)
    if replaced is None:
        return f"{current.replaces}, which {serving} replaced, no longer exists"
    return f"{replaced.name} ({replaced.release_id}), which {serving} replaced, is {replaced.state}"


def teardown(cluster: Cluster, keep: int, orphans: dict[str, list[str]] | None = None) -> Plan:
    """Delete failed and rolled-back groups, then the oldest disabled ones beyond the `keep` most
    recent. Never a serving group, a canary, or the serving group's rollback target (which
    counts among the kept)."""
    serving = cluster.baseline()
    target = cluster.rollback_target(serving) if serving else None
    plan = Plan("teardown", cluster.name, balanced=_balanced(cluster),
                summary=f"keep the {keep} most recent disabled groups"
                + (f" and {target.name}, the rollback target" if target else ""))
    idle = [g for g in reversed(cluster.groups) if not g.serving and g is not target]
    disabled = [g for g in idle if g.state == model.DISABLED]
    ended = [g for g in idle if g.state in (model.FAILED, model.ROLLED_BACK)]
    beyond = disabled[max(keep - (target is not None), 0):]
    doomed = sorted(ended, key=lambda g: g.sequence) + sorted(beyond, key=lambda g: g.sequence)
    on_listener = [g.name for g in doomed if g.weight is not None]
    if on_listener:
        plan.add("weights", weights=members(cluster, {n: None for n in on_listener}))
    for group in doomed:
        plan.add("delete", group=group.name)
    if orphans and (orphans["target_groups"] or orphans["launch_templates"]):
        plan.add("delete_orphans", resources=orphans,
                 note=", ".join(orphans["target_groups"] + orphans["launch_templates"]))
    return plan
