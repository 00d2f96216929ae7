"""What a deploy operation writes into the release ledger (cloud/history.py): who, when, which
cluster, from and to which release, why (`--reason`), and how it ended."""

from __future__ import annotations

from cloud import history
from cloud.console import say


def event(env, plan, cluster, run_id: str, reason: str | None) -> dict:
    """The event of one operation about to run: what serves now, and where it goes."""
    serving = cluster.baseline()
    target = cluster.group(plan.new_group) if plan.new_group else None
    created = next((s for s in plan.steps if s.action == "create"), None)
    to_release = target.release_id if target else (_release(created.image) if created else None)
    deleted = [s.group for s in plan.steps if s.action == "delete"]
    return {"event": plan.operation, "app": env.app, "cluster": env.cluster,
            "account": env.aws.account_name, "region": env.region, "run_id": run_id,
            "from_release": serving.release_id if serving else None,
            "from_group": serving.name if serving else None,
            "to_release": to_release, "to_group": plan.new_group, "reason": reason,
            "summary": plan.summary or None, "detail": {"deleted": deleted} if deleted else None}


def started(env, found: dict) -> None:
    origin = env.origin or env.aws
    history.record(origin, f"app/{env.app}", {**found, "outcome": "started"})


def ended(env, found: dict, outcome: str, error: str | None, runner) -> None:
    """The outcome, also when the operation failed or was interrupted; a failure to record it
    is said, never raised over the operation's own error."""
    origin = env.origin or env.aws
    detail = dict(found.get("detail") or {})
    if runner is not None and runner.judgement:
        detail["judgement"] = {k: runner.judgement[k] for k in ("verdict", "reasons", "canary",
                                                                 "baseline")}
    if runner is not None:
        detail["steps_done"] = len(runner.done)
    try:
        history.record(origin, f"app/{env.app}", {**found, "outcome": outcome, "error": error,
                                                  "detail": detail or None})
    except Exception as failure:  # noqa: BLE001 - the operation's own outcome comes first
        say(f"history: the outcome ({outcome}) was not recorded: {failure}")


def _release(image: dict | None) -> str | None:
    if not image:
        return None
    return f"{image['version']}-{image['release']}" if image.get("release") else image["version"]
