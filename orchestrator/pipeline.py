"""Run an app's release pipeline (cloud/pipelines.py) for one version, stage by stage, with gates
that remember.

Each stage's outcome for a version (passed or failed, when, by whom, its evidence) is recorded in
the release ledger (cloud/history.py, subject release/<app>/<version>, and the app's history) and
as a `kiln:stage:<name>` tag on the version's image in the build account. A stage whose gate is
`passed` refuses a version that has not passed every stage before it, naming the first missing
one; `--override` lets it through, and the override is recorded with who gave it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

from botocore.exceptions import ClientError

from cloud import history, pipelines, stacks, tags
from cloud.aws import Aws
from cloud.console import say
from cloud.errors import KilnError, Refused
from cloud.images import all_images
from cloud.inputs import human, seconds

ROOT = Path(__file__).resolve().parent.parent
TAG_PREFIX = "kiln:stage:"
ACCEPTANCE_OWNER = "candidate"  # the environment: cluster <app>-candidate


class StageFailed(KilnError):
    """A stage ran and failed; its outcome is recorded."""


def stages(settings) -> list[pipelines.Stage]:
    app = settings.app
    entry = (settings.get("apps") or {}).get(app) or {}
    found = pipelines.check(app, entry.get("pipeline"))
    if not found:
        raise Refused(f"kiln.apps.{app}.pipeline: no pipeline for {app} (see docs/pipeline.md)")
    return found


def select(found: list, start: str | None, end: str | None) -> list:
    names = [s.name for s in found]
    for flag, name in (("--from", start), ("--to", end)):
        if name is not None and name not in names:
            raise Refused(f"{flag} {name}: no such stage (stages: {', '.join(names)})")
    first = names.index(start) if start else 0
    last = names.index(end) if end else len(names) - 1
    if first > last:
        raise Refused(f"--from {start} comes after --to {end}")
    return found[first:last + 1]


# -- the ledger -----------------------------------------------------------------------------


def subject(app: str, version: str) -> str:
    return f"release/{app}/{version}"


def results(aws: Aws, app: str, version: str) -> dict[str, dict]:
    """The newest outcome of each stage for the version: {stage name: event}."""
    newest: dict[str, dict] = {}
    for found in history.read(aws, subject(app, version)):
        if found.get("event") == "stage" and found.get("outcome") in ("passed", "failed"):
            newest.setdefault(found["stage"], found)
    return newest


def missing(before: list, passed: dict[str, dict]) -> list[str]:
    return [s.name for s in before if passed.get(s.name, {}).get("outcome") != "passed"]


def record(aws: Aws, app: str, version: str, stage: str, outcome: str, run_id: str,
           evidence: dict | None = None, seconds_taken: float | None = None,
           comment: str | None = None, error: str | None = None) -> dict:
    """One stage outcome, in the release's ledger and the app's history, and on its image."""
    event = {"event": "stage", "stage": stage, "app": app, "to_release": version,
             "outcome": outcome, "run_id": run_id, "evidence": evidence,
             "seconds": None if seconds_taken is None else round(seconds_taken, 1),
             "reason": comment, "error": error}
    item = history.record(aws, subject(app, version), event, required=True)
    history.record(aws, f"app/{app}", {**event, "event": f"stage {stage}"}, required=True)
    tag_image(aws, app, version)
    notify(aws, f"{app} {version}: stage {stage} {outcome}",
           {**event, "who": item["who"], "at": item["at"]})
    return item


def notify(aws: Aws, subject_line: str, message: dict) -> None:
    """Publish to the pipeline's SNS topic (the build stack's PipelineTopicArn); an older build
    stack without it: nothing. A notice that cannot be sent is said, never fails a stage."""
    try:
        topic = stacks.output(aws, "build", "PipelineTopicArn")
    except KilnError:
        return
    try:
        aws.client("sns").publish(TopicArn=topic, Subject=subject_line[:100],
                                  Message=json.dumps(message, sort_keys=True, default=str))
    except ClientError as error:
        say(f"pipeline: notice not sent to {topic}: {error}")


def tag_image(aws: Aws, app: str, version: str) -> str | None:
    """`kiln:stage:<stage>` = `<outcome> <when> <who>` of every stage recorded for the version,
    on its images in the build account (none baked yet: nothing; the image stage's own record
    then tags what came before it)."""
    ec2 = aws.client("ec2")
    found = all_images(ec2, Owners=["self"], Filters=tags.filters(
        {tags.APP: app, tags.VERSION: version}))
    if not found:
        return None
    labels = [{"Key": f"{TAG_PREFIX}{name}",
               "Value": f"{e['outcome']} {e['at'][:19]}Z {e['operator']}"[:256]}
              for name, e in results(aws, app, version).items()]
    ec2.create_tags(Resources=[i["ImageId"] for i in found], Tags=labels)
    return found[0]["ImageId"]


def gate(aws: Aws, app: str, version: str, stage, before: list, override: bool,
         run_id: str) -> None:
    """Refuse the stage unless every stage before it passed for the version (gate `passed`);
    with `override`, go on and record who overrode what."""
    if stage.gate == "none" or not before:
        return
    lacking = missing(before, results(aws, app, version))
    if not lacking:
        return
    if not override:
        raise Refused(f"stage {stage.name}: {app} {version} has not passed stage {lacking[0]}"
                      + (f" (nor {', '.join(lacking[1:])})" if lacking[1:] else "")
                      + "; run it first, or give --override (recorded)")
    history.record(aws, subject(app, version), {
        "event": "override", "stage": stage.name, "app": app, "to_release": version,
        "outcome": "overridden", "run_id": run_id, "evidence": {"missing": lacking}},
        required=True)
    history.record(aws, f"app/{app}", {
        "event": f"override {stage.name}", "app": app, "to_release": version,
        "outcome": "overridden", "run_id": run_id, "evidence": {"missing": lacking}},
        required=True)
    say(f"stage {stage.name}: --override: going on without {', '.join(lacking)} (recorded)")


# -- running --------------------------------------------------------------------------------


def run(aws: Aws, version: str, start: str | None = None, end: str | None = None,
        dry_run: bool = False, override: bool = False) -> dict:
    settings = aws.settings
    app = settings.app
    everything = stages(settings)
    chosen = select(everything, start, end)
    if history.table(aws) is None:
        raise Refused(f"pipeline: no history table to keep the stages' outcomes in (stack "
                      f"{aws.settings.stacks.prefix}-build has no {history.OUTPUT} output): "
                      f"run `invoke bootstrap`")
    passed = results(aws, app, version)
    if dry_run:
        return _plan(app, version, everything, chosen, passed)
    run_id = tags.new_run_id()
    done = []
    say(f"pipeline {app} {version}: {', '.join(s.name for s in chosen)} (run {run_id})")
    for number, stage in enumerate(chosen, 1):
        before = everything[:everything.index(stage)]
        gate(aws, app, version, stage, before, override, run_id)
        say(f"[{number}/{len(chosen)}] stage {stage.name} ({stage.action}): started")
        started = time.monotonic()
        try:
            evidence = ACTIONS[stage.action](aws, stage, version, run_id)
        except Refused:
            raise  # refused before acting (an approval not given yet): nothing to record
        except (Exception, KeyboardInterrupt) as failure:
            took = time.monotonic() - started
            outcome = "interrupted" if isinstance(failure, KeyboardInterrupt) else "failed"
            say(f"[{number}/{len(chosen)}] stage {stage.name}: {outcome} after {human(int(took))}")
            record(aws, app, version, stage.name, "failed", run_id, seconds_taken=took,
                   error=f"{outcome}: {failure}")
            if outcome == "interrupted":
                say(f"to go on: `invoke pipeline.run --app {app} --version {version} "
                    f"--from {stage.name}`")
            raise
        took = time.monotonic() - started
        if evidence is not None:  # an approval records itself, when it is given
            record(aws, app, version, stage.name, "passed", run_id, evidence, took)
        say(f"[{number}/{len(chosen)}] stage {stage.name}: passed in {human(int(round(took)))}")
        done.append({"stage": stage.name, "action": stage.action, "outcome": "passed",
                     "seconds": round(took, 1)})
    return {"app": app, "version": version, "run_id": run_id, "stages": done}


def _plan(app: str, version: str, everything: list, chosen: list, passed: dict) -> dict:
    say(f"plan: pipeline {app} {version}")
    rows = []
    for stage in everything:
        known = passed.get(stage.name)
        state = f"{known['outcome']} {known['at'][:19]}Z by {known['operator']}" if known \
            else "not run"
        runs = stage in chosen
        before = everything[:everything.index(stage)]
        lacking = [n for n in missing(before, passed) if n not in {s.name for s in chosen}]
        blocked = (stage.gate == "passed" and runs and lacking
                   and everything.index(stage) == everything.index(chosen[0]))
        note = f"; refused: {lacking[0]} not passed" if blocked else ""
        say(f"  {'▶' if runs else ' '} {stage.name} ({stage.action}, gate {stage.gate}): "
            f"{state}{note}")
        rows.append({"stage": stage.name, "action": stage.action, "gate": stage.gate,
                     "runs": runs, "last": known})
    say("dry run: nothing changed")
    return {"app": app, "version": version, "result": "dry-run", "stages": rows}


# -- actions: each returns the stage's evidence (None: recorded elsewhere) ------------------
# The commands' output goes to stderr with Kiln's progress: stdout is for --json alone.


def _commit(aws: Aws, stage, version: str, run_id: str) -> dict:
    from packager import repo
    from packager.build import package

    settings = aws.settings
    env = {**os.environ, "KILN_APP": settings.app, "KILN_VERSION": version}
    commands = []
    for command in stage.get("commands", []):
        say(f"  $ {command}")
        started = time.monotonic()
        done = subprocess.run(command, shell=True, cwd=ROOT, env=env, stdout=sys.stderr)
        commands.append({"command": command, "status": done.returncode,
                         "seconds": round(time.monotonic() - started, 1)})
        if done.returncode != 0:
            raise StageFailed(f"stage {stage.name}: `{command}` exited {done.returncode}")
    built = package(settings, settings.manifest, version)
    evidence = {"commands": commands, "package": built["nevra"], "sha256": built["sha256"]}
    if stage.get("publish", True):
        published = repo.publish(aws, built["path"])
        evidence["published"] = published.get("action", "published")
    return evidence


def _image(aws: Aws, stage, version: str, run_id: str) -> dict:
    """Bake the version, then promote it into the deploy account, where the later stages
    roll it out (`invoke bake`, then `invoke ami.promote --to <kiln.deploy.account>`)."""
    from provisioner import bake, promote

    result = bake.run(aws, aws.settings, version)
    release = f"{result['version']}-{result['release']}"
    evidence = {"image": result["image_id"], "images": result["images"], "release": release,
                "reused": result["reused"]}
    to = aws.settings.deploy.account
    if to != aws.account_name:
        promoted = promote.promote(aws, aws.settings.app, release, to)
        evidence["promoted"] = {"to": to, "promotions": promoted["promotions"]}
    return evidence


def _acceptance(aws: Aws, stage, version: str, run_id: str) -> dict:
    """A transient environment of the version in a non-production stack's environment, the
    app's acceptance command against it, then the environment removed (also on failure and
    Ctrl-C or SIGTERM; a kill -9 leaves it to expire and the janitor)."""
    from orchestrator import selfservice

    stack = stage.get("stack", "acceptance")
    cluster = f"{aws.settings.app}-{stack}"
    timeout = seconds(stage.get("timeout", "30m"), f"stage {stage.name}: timeout")
    made = selfservice.up(aws, ACCEPTANCE_OWNER, "2h", version, env_cluster=cluster)
    try:
        env = {**os.environ, **made["environment"], "KILN_APP": aws.settings.app,
               "KILN_VERSION": version}
        junit = ROOT / "dist" / f"acceptance-{aws.settings.app}-{version}.xml"
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.unlink(missing_ok=True)
        env["KILN_JUNIT_XML"] = str(junit)
        command = stage.get("command")
        say(f"  $ {command}   (KILN_URL={env['KILN_URL']})")
        started = time.monotonic()
        try:
            done = subprocess.run(command, shell=True, cwd=ROOT, env=env, timeout=timeout,
                                  stdout=sys.stderr)
            status = done.returncode
        except subprocess.TimeoutExpired:
            raise StageFailed(f"stage {stage.name}: `{command}` ran past {human(timeout)}"
                              ) from None
        evidence = {"command": command, "status": status, "url": env["KILN_URL"],
                    "server_group": made["server_group"],
                    "seconds": round(time.monotonic() - started, 1), **_junit(junit)}
        if status != 0:
            raise StageFailed(f"stage {stage.name}: `{command}` exited {status}"
                              + (f" ({evidence['failures']} failures of {evidence['tests']})"
                                 if "tests" in evidence else ""))
        return evidence
    finally:
        selfservice.down(aws, ACCEPTANCE_OWNER, env_cluster=cluster)


def _junit(path: Path) -> dict:
    """Test counts from a JUnit XML file the command wrote, if it wrote one."""
    if not path.exists():
        return {}
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        return {"junit_error": str(error)}
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {key: sum(int(s.get(key, 0)) for s in suites)
              for key in ("tests", "failures", "errors", "skipped")}
    return {**counts, "junit": str(path)}


def _deploy(aws: Aws, stage, version: str, run_id: str) -> dict:
    from orchestrator import operations

    result = operations.deploy(aws, version=version, stack=stage.get("stack"),
                               steps=stage.get("steps"), watch=stage.get("watch"),
                               reason=f"pipeline {run_id} stage {stage.name}")
    return {"cluster": result["cluster"], "result": result["result"],
            "summary": result["plan"]["summary"], "seconds": result["seconds"]}


def _approval(aws: Aws, stage, version: str, run_id: str) -> None:
    app = aws.settings.app
    given = results(aws, app, version).get(stage.name)
    if given and given["outcome"] == "passed":
        say(f"  approved by {given['who']} at {given['at'][:19]}Z"
            + (f": {given['reason']}" if given.get("reason") else ""))
        return None
    if given:
        raise StageFailed(f"stage {stage.name}: {app} {version} was rejected by {given['who']}"
                          + (f": {given['reason']}" if given.get("reason") else ""))
    notify(aws, f"{app} {version}: waiting for approval at stage {stage.name}", {
        "event": "approval pending", "app": app, "version": version, "stage": stage.name,
        "run_id": run_id, "approve": f"invoke pipeline.approve --app {app} --version {version}"})
    raise Refused(f"stage {stage.name}: {app} {version} waits for approval: `invoke "
                  f"pipeline.approve --app {app} --version {version} --comment …` (or "
                  f"pipeline.reject), then `invoke pipeline.run --app {app} --version {version} "
                  f"--from {stage.name}`")


def _production(aws: Aws, stage, version: str, run_id: str) -> dict:
    """A canary of the version, judged, then promoted: a rollback by its gate fails the
    stage (and the command exits 3)."""
    from orchestrator import operations

    reason = f"pipeline {run_id} stage {stage.name}"
    percent = stage.get("percent", aws.settings.deploy.canary.percent)
    cluster = operations.status(aws, stage.get("stack"))
    if not cluster["server_groups"]:  # nothing to judge against: a first deployment
        first = operations.deploy(aws, version=version, stack=stage.get("stack"),
                                  steps=stage.get("steps"), watch=stage.get("watch"),
                                  reason=reason)
        return {"cluster": first["cluster"], "first_deployment": True}
    canary = operations.canary(aws, percent, version=version, stack=stage.get("stack"),
                               watch=stage.get("watch"), reason=reason)
    promoted = operations.promote(aws, stack=stage.get("stack"), steps=stage.get("steps"),
                                  watch=stage.get("watch"), reason=reason)
    return {"cluster": promoted["cluster"], "percent": percent,
            "judgement": (canary.get("judgement") or {}).get("verdict"),
            "promote_judgement": (promoted.get("judgement") or {}).get("verdict")}


ACTIONS = {"commit": _commit, "image": _image, "acceptance": _acceptance, "deploy": _deploy,
           "approval": _approval, "production": _production}


# -- approval -------------------------------------------------------------------------------


def decide(aws: Aws, version: str, approved: bool, comment: str | None = None,
           override: bool = False) -> dict:
    """Approve (or reject) the version at the pipeline's approval stage, as the caller."""
    settings = aws.settings
    app = settings.app
    everything = stages(settings)
    stage = next((s for s in everything if s.action == "approval"), None)
    if stage is None:
        raise Refused(f"kiln.apps.{app}.pipeline: no approval stage to approve")
    run_id = tags.new_run_id()
    gate(aws, app, version, stage, everything[:everything.index(stage)], override, run_id)
    item = record(aws, app, version, stage.name, "passed" if approved else "failed", run_id,
                  {"approved": approved}, comment=comment)
    say(f"pipeline {app} {version}: {'approved' if approved else 'rejected'} by {item['who']}"
        + (f": {comment}" if comment else ""))
    return {"app": app, "version": version, "stage": stage.name, "approved": approved,
            "who": item["who"], "at": item["at"], "comment": comment}
