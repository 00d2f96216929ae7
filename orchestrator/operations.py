"""The deploy operations behind the tasks: read the cluster, plan, print, lock, apply.

Each returns a result dict (the plan, the outcome, the AWS API calls it made, the cluster after);
`dry_run` stops after printing the plan and changes nothing.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from cloud import apps, history, inputs, locks, tags
from cloud.aws import Aws
from cloud.console import say
from cloud.errors import EXIT_ROLLED_BACK, KilnError, Refused
from orchestrator import audit, environment, groups, images
from orchestrator import cluster as model
from orchestrator import plan as plans
from orchestrator.apply import Observer, Runner
from orchestrator.health import AlarmFired, Unhealthy, require_alarms
from orchestrator.judge import CanaryFailed


class RolledBack(KilnError):
    """The operation failed its checks and the cluster was rolled back; `result` says how."""

    exit_code = EXIT_ROLLED_BACK

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def rules(settings, steps: str | None = None, watch: str | None = None) -> plans.Rules:
    deploy = settings.deploy
    return plans.Rules(
        instance_type=deploy.instance_type, desired=deploy.capacity.desired,
        max_size=deploy.capacity.max, canary_capacity=deploy.canary.capacity,
        canary_min=deploy.canary.min_capacity,
        steps=inputs.steps(steps if steps is not None else deploy.steps,
                           "--steps" if steps is not None else "kiln.deploy.steps"),
        watch=inputs.seconds(watch if watch is not None else deploy.watch,
                             "--watch" if watch is not None else "kiln.deploy.watch"),
        health_timeout=inputs.seconds(deploy.health_timeout, "kiln.deploy.health_timeout"),
        disable_mode=deploy.disable.mode,
        disable_delay=inputs.seconds(deploy.disable.delay, "kiln.deploy.disable.delay"),
        keep=deploy.keep)


def status(aws: Aws, stack: str | None = None, app: str | None = None) -> dict:
    env = environment.load(aws, app=app, stack=stack)
    return {**model.read(env).as_dict(), "url": model.url(env)}


def status_all(aws: Aws, app: str | None = None, stack: str | None = None) -> dict:
    """Every cluster of every app (or of `app`, or just `app`-`stack`): {clusters: [...]}, the
    first cluster's keys also at the top. A cluster that cannot be read is an entry with its
    error; when none can be, the first error is raised."""
    wanted = [(a, s) for a, s in apps.clusters(aws.settings)
              if (app is None or a == app) and (stack is None or s == stack)]
    if app is not None and stack is not None and (app, stack) not in wanted:
        wanted = [(app, stack)]
    if app is not None and not wanted:
        wanted = [(app, None)]
    entries, errors = [], []
    for name, part in wanted:
        account = aws.settings.deploy.account
        try:
            # Each cluster with its own settings: a stack may run in an account of its own.
            settings = apps.for_app(aws.settings, name, part)
            account = settings.deploy.account
            entries.append(status(aws.with_settings(settings), part, name))
        except KilnError as error:
            errors.append(error)
            entries.append({"cluster": environment.cluster_name(name, part),
                            "account": account, "error": str(error), "server_groups": []})
    if errors and len(errors) == len(entries):
        raise errors[0]
    return {**entries[0], "clusters": entries}


def status_lines(result: dict) -> list[str]:
    if result.get("error"):
        return [f"cluster {result['cluster']} ({result['account']}): {result['error']}"]
    where = f"at {result['url']}" if result.get("url") else "(no load balancer)"
    head = f"cluster {result['cluster']} ({result['account']}, {result['region']}) {where}"
    if not result["server_groups"]:
        flag = f" --app {result['app']}" if result.get("app") else ""
        return [head, f"  no server groups yet: `invoke deploy{flag} --version X`"]
    rows = [("GROUP", "VERSION", "AMI", "DESIRED", "IN-SERVICE", "HEALTHY", "WEIGHT", "AGE",
             "STATE")]
    for g in result["server_groups"]:
        weight = f"{g['weight']}%" if g["on_listener"] else "-"
        rows.append((g["name"], g["release_id"], g["ami"], str(g["desired"]), str(g["in_service"]),
                     str(g["healthy"]), weight, g["age"], g["state"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [head] + ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                     .rstrip() for row in rows]


def canary(aws: Aws, percent, version=None, ami=None, watch=None, stack=None,
           dry_run=False, force_unlock=False, observer: Observer | None = None,
           reason: str | None = None, allow_failed: bool = False) -> dict:
    percent = inputs.percent(percent)
    env = environment.load(aws, stack=stack)
    require_alarms(env)
    settings_rules = rules(aws.settings, watch=watch)
    image = images.resolve(env, version, ami)
    notes: dict = {}

    def build(cluster):
        not_failed_before(env, cluster, image, "canary", allow_failed, dry_run, notes)
        return plans.canary(cluster, settings_rules, image, percent)

    return _operate(env, "canary", settings_rules, dry_run, force_unlock, observer, build,
                    reason=reason, notes=notes)


def deploy(aws: Aws, version=None, ami=None, steps=None, watch=None, stack=None,
           dry_run=False, force_unlock=False, observer: Observer | None = None,
           reason: str | None = None, allow_failed: bool = False) -> dict:
    env = environment.load(aws, stack=stack)
    require_alarms(env)
    settings_rules = rules(aws.settings, steps=steps, watch=watch)
    image = images.resolve(env, version, ami)
    notes: dict = {}

    def build(cluster):
        not_failed_before(env, cluster, image, "deploy", allow_failed, dry_run, notes)
        return plans.deploy(cluster, settings_rules, image)

    return _operate(env, "deploy", settings_rules, dry_run, force_unlock, observer, build,
                    reason=reason, notes=notes)


def failed_before(env, cluster, release_id: str) -> list[str]:
    """The groups of this release its gate rolled back in the cluster: those still tagged
    failed, and those the history records (it outlives teardown)."""
    found = {g.name for g in cluster.groups
             if g.state == model.FAILED and g.release_id == release_id}
    origin = env.origin or env.aws
    if history.table(origin) is not None:
        found |= {e["to_group"] for e in history.read(origin, f"app/{env.app}")
                  if e.get("cluster") == env.cluster and e.get("outcome") == "rolled back"
                  and e.get("to_release") == release_id and e.get("to_group")}
    return sorted(found)


def not_failed_before(env, cluster, image, operation: str, allow_failed: bool, dry_run: bool,
                      notes: dict) -> None:
    """Refuse to roll out a release its gate rolled back before, unless `allow_failed` (then
    noted in the operation's history event); a dry run warns above its plan."""
    failed = failed_before(env, cluster, image.release_id)
    if not failed:
        return
    whose = "their" if len(failed) > 1 else "its"
    what = (f"{env.app} {image.release_id} failed in cluster {env.cluster} before "
            f"({', '.join(failed)} rolled back by {whose} gate)")
    if allow_failed:
        say(f"warning: {what}; --allow-failed: rolling it out anyway (recorded)")
        notes["allowed_failed"] = failed
    elif dry_run:
        say(f"warning: {what}; the {operation} is refused without --allow-failed")
    else:
        raise Refused(f"{operation}: {what}; give --allow-failed to roll it out anyway "
                      f"(recorded)")


def promote(aws: Aws, steps=None, watch=None, stack=None, dry_run=False, force_unlock=False,
            observer: Observer | None = None, reason: str | None = None) -> dict:
    env = environment.load(aws, stack=stack)
    require_alarms(env)
    settings_rules = rules(aws.settings, steps=steps, watch=watch)
    return _operate(env, "promote", settings_rules, dry_run, force_unlock, observer,
                    lambda cluster: plans.promote(cluster, settings_rules), reason=reason)


def rollback(aws: Aws, stack=None, dry_run=False, force_unlock=False,
             observer: Observer | None = None, reason: str | None = None) -> dict:
    env = environment.load(aws, stack=stack)
    settings_rules = rules(aws.settings)
    return _operate(env, "rollback", settings_rules, dry_run, force_unlock, observer,
                    lambda cluster: plans.rollback(cluster, settings_rules), auto_abort=False,
                    reason=reason)


def teardown(aws: Aws, keep=None, stack=None, dry_run=False, force_unlock=False,
             observer: Observer | None = None, reason: str | None = None) -> dict:
    env = environment.load(aws, stack=stack)
    settings_rules = rules(aws.settings)
    keep = settings_rules.keep if keep is None else int(keep)
    if keep < 0:
        raise Refused(f"--keep: must not be negative, got {keep}")

    def build(cluster):
        known = {g.name for g in cluster.groups}
        orphans = groups.orphans(env, known, set(cluster.listener_weights))
        return plans.teardown(cluster, keep, orphans)

    return _operate(env, "teardown", settings_rules, dry_run, force_unlock, observer, build,
                    auto_abort=False, reason=reason)


def _operate(env, operation, settings_rules, dry_run, force_unlock, observer, build,
             auto_abort=True, reason=None, notes=None) -> dict:
    calls = env.aws.calls
    start_calls, started = calls.total, time.monotonic()
    before = calls.by_operation.copy()
    if dry_run:
        plan = build(model.read(env))
        _print(plan, dry_run=True)
        return _result(env, plan, "dry-run", start_calls, before, started)
    run_id = tags.new_run_id()
    with cluster_lock(env, operation, run_id, force_unlock, settings_rules) as lease:
        cluster = model.read(env)
        plan = build(cluster)
        _print(plan)
        # Recorded before anything changes: an operation nobody could record does not run.
        event = audit.event(env, plan, cluster, run_id, reason)
        if notes:
            event["detail"] = {**(event.get("detail") or {}), **notes}
        audit.started(env, event)
        runner = Runner(env, plan, settings_rules, run_id, lease, observer)
        outcome, error = "failed", None
        try:
            runner.run()
            outcome = "ok"
        except KeyboardInterrupt:
            outcome = "interrupted"
            left_behind(env, operation, plan, runner)
            raise
        except (AlarmFired, Unhealthy, CanaryFailed) as failure:
            error = str(failure)
            if not (auto_abort and plan.new_group):
                raise
            outcome = "rolled back"
            say(f"{operation} failed: {failure}; rolling back {plan.new_group}")
            undo = plans.abort(model.read(env), plan.new_group, f"{operation} failed: {failure}")
            _print(undo)
            Runner(env, undo, settings_rules, run_id, lease, observer).run()
            result = _result(env, plan, "rolled back", start_calls, before, started,
                             error=str(failure), rollback=undo, judgement=runner.judgement)
            raise RolledBack(f"{operation} of {plan.new_group} failed ({failure}); rolled back: "
                             f"{plan.new_group} has weight 0, is scaled to 0 and tagged failed",
                             result) from None
        except Exception as failure:
            error = str(failure)
            raise
        finally:
            audit.ended(env, event, outcome, error, runner)
    return _result(env, plan, "ok", start_calls, before, started, judgement=runner.judgement)


# What finishes an interrupted operation, and what undoes it (None: nothing to say).
_NEXT = {"canary": ("promote", "rollback"), "deploy": ("promote", "rollback"),
         "promote": ("promote", "rollback"), "rollback": ("rollback", None),
         "teardown": ("teardown", None)}


def left_behind(env, operation: str, plan: plans.Plan, runner: Runner) -> None:
    """After SIGINT or SIGTERM: the step it stopped in, the cluster as it is now, and the
    commands that finish or undo what was begun. The lock is released on the way out."""
    total, done = len(plan.steps), len(runner.done)
    if done < total:
        say(f"{operation} interrupted in step [{done + 1}/{total}] "
            f"{plan.steps[done].describe()}; steps 1-{done} were done")
    try:
        cluster = {**model.read(env).as_dict(), "url": model.url(env)}
        for line in status_lines(cluster):
            say(line)
    except Exception as error:  # noqa: BLE001 - the state is best effort; the commands still help
        say(f"could not read cluster {env.cluster} now: {error}")
    flags = f" --app {env.app}" + (f" --stack {env.cluster.removeprefix(env.app + '-')}"
                                   if env.cluster != env.app else "")
    finish, undo = _NEXT[operation]
    if done == 0 and operation in ("canary", "deploy"):
        say(f"nothing was shifted; `invoke teardown{flags}` removes a half-made group")
        return
    say(f"to finish: `invoke {finish}{flags}`")
    if undo:
        say(f"to undo: `invoke {undo}{flags}`")


@contextmanager
def cluster_lock(env, operation: str, run_id: str, force_unlock: bool, settings_rules):
    if not env.lock_table:
        raise KilnError(f"no lock table for cluster {env.cluster}: set kiln.deploy.lock.table "
                        f"or add LockTableName to stack {env.stack_name}")
    lease_seconds = inputs.seconds(env.settings.deploy.lock.lease, "kiln.deploy.lock.lease")
    owner = f"{operation} by {locks.owner_description(run_id)}"
    with locks.lease(env.aws, env.lock_table, f"cluster/{env.cluster}", owner,
                     ttl_seconds=lease_seconds, force=force_unlock,
                     force_option="--force-unlock", region=env.region) as lease:
        yield lease


def _print(plan: plans.Plan, dry_run: bool = False) -> None:
    for line in plan.lines():
        say(line)
    if dry_run:
        say("dry run: nothing changed")


def _result(env, plan, outcome, start_calls, before, started, error=None, rollback=None,
            judgement=None) -> dict:
    calls = env.aws.calls
    by_operation = {k: v - before.get(k, 0) for k, v in calls.by_operation.items()
                    if v - before.get(k, 0)}
    result = {"operation": plan.operation, "cluster": env.cluster, "result": outcome,
              "plan": plan.as_dict(), "api_calls": calls.total - start_calls,
              "api_calls_by_operation": by_operation,
              "seconds": round(time.monotonic() - started, 2)}
    if error:
        result["error"] = error
    if rollback:
        result["rollback"] = rollback.as_dict()
    if judgement:
        result["judgement"] = judgement
    if outcome != "dry-run":
        result["server_groups"] = model.read(env).as_dict()["server_groups"]
    return result
