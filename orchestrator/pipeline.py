"""Run an app's release pipeline (cloud/pipelines.py) for one version, stage by stage, with gates
that remember.

Each stage's outcome for a release (version-release: passed or failed, when, by whom, its
evidence) is recorded in the release ledger (cloud/history.py, subject release/<app>/<release>,
and the app's history) and as a `kiln:stage:<name>` tag on that release's image in the build
account. A stage whose gate is `passed` refuses a release that has not passed every stage before
it, naming the first missing one; `--override` lets it through, and the override is recorded with
who gave it. A rebuild (the same version, a new release) passes every stage anew.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from xml.etree import ElementTree

import semver
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
    """A stage ran and failed; its outcome is recorded, with `evidence` when it has some."""

    def __init__(self, message: str, evidence: dict | None = None):
        super().__init__(message)
        self.evidence = evidence


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


def release_id(settings, text: str) -> str:
    """The release a run is about: `X.Y.Z-R` as given, `X.Y.Z` with the app manifest's
    iteration (what the commit stage packages and the image stage bakes)."""
    version, release = tags.release_readings(text)[0]
    if not semver.Version.is_valid(version):
        raise Refused(f"--version: {text!r} is not a semantic version (X.Y.Z or X.Y.Z-R, e.g. "
                      f"1.4.2 or 1.4.2-2)")
    if release is None:
        from packager.manifest import load

        release = load(settings.manifest, version, digest=False).iteration
    return f"{version}-{release}"


def split(release: str) -> tuple[str, str]:
    """(version, iteration) of a release id made by release_id."""
    version, _, iteration = release.rpartition("-")
    return version, iteration


# -- the ledger -----------------------------------------------------------------------------


def subject(app: str, version: str) -> str:
    return f"release/{app}/{version}"


def results(aws: Aws, app: str, version: str) -> dict[str, dict]:
    """The newest outcome of each stage for the release (`version`: its id, X.Y.Z-R):
    {stage name: event}."""
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
    """`kiln:stage:<stage>` = `<outcome> <when> <who>` of every stage recorded for the release
    (`version`: X.Y.Z-R), on its images in the build account, never on another release's (none
    baked yet: nothing; the image stage's own record then tags what came before it)."""
    ec2 = aws.client("ec2")
    plain, iteration = split(version)
    found = all_images(ec2, Owners=["self"], Filters=tags.filters(
        {tags.APP: app, tags.VERSION: plain, tags.RELEASE: iteration}))
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
    version = release_id(settings, version)
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
        started, calls = time.monotonic(), aws.calls.total
        try:
            evidence = ACTIONS[stage.action](aws, stage, version, run_id)
        except Refused:
            raise  # refused before acting (an approval not given yet): nothing to record
        except (Exception, KeyboardInterrupt) as failure:
            took = time.monotonic() - started
            outcome = "interrupted" if isinstance(failure, KeyboardInterrupt) else "failed"
            say(f"[{number}/{len(chosen)}] stage {stage.name}: {outcome} after {human(int(took))}")
            record(aws, app, version, stage.name, "failed", run_id,
                   getattr(failure, "evidence", None), seconds_taken=took,
                   error=f"{outcome}: {failure}")
            if outcome == "interrupted":
                say(f"to go on: `invoke pipeline.run --app {app} --version {version} "
                    f"--from {stage.name}`")
            raise
        took = time.monotonic() - started
        if evidence is not None:  # an approval records itself, when it is given
            record(aws, app, version, stage.name, "passed", run_id, evidence, took)
        calls = aws.calls.total - calls  # the stage's own, its record included
        say(f"[{number}/{len(chosen)}] stage {stage.name}: passed in {human(int(round(took)))} "
            f"({calls} AWS calls)")
        done.append({"stage": stage.name, "action": stage.action, "outcome": "passed",
                     "seconds": round(took, 1), "api_calls": calls})
    return {"app": app, "version": version, "run_id": run_id, "stages": done}


def _recorded(known: dict | None) -> str:
    """A stage's last recorded outcome as one phrase: `passed 2026-12-07T08:12:44Z by NAME`."""
    return f"{known['outcome']} {known['at'][:19]}Z by {known['operator']}" if known \
        else "not run"


def _plan(app: str, version: str, everything: list, chosen: list, passed: dict) -> dict:
    say(f"plan: pipeline {app} {version}")
    rows = []
    for stage in everything:
        known = passed.get(stage.name)
        state = _recorded(known)
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


def _answer_codepipeline(aws: Aws, app: str, version: str, stage: str, approved: bool, who: str,
                        comment: str | None) -> None:
    """On CodePipeline, the decision also answers the pending manual approval."""
    from orchestrator import codepipeline

    if codepipeline.engine(aws.settings, app) is None:
        return
    summary = f"{version} {'approved' if approved else 'rejected'} by {who}" + (
        f": {comment}" if comment else "")
    name = codepipeline.release_approval(aws, app, version, stage, approved, summary)
    if name:
        say(f"pipeline {name}: approval at stage {stage} answered")


# -- status -------------------------------------------------------------------------------


def status(aws: Aws, version: str | None = None) -> dict:
    """What the release ledger holds for a version (default: the newest the app's history names):
    each stage's latest outcome, when and by whom."""
    app = aws.settings.app
    everything = stages(aws.settings)
    version = version or latest_version(aws, app)
    if version is None:
        say(f"pipeline {app}: no stage recorded yet")
        return {"app": app, "version": None, "engine": "local", "stages": []}
    passed = results(aws, app, version)
    say(f"pipeline {app} {version}: stages as recorded")
    rows = []
    for stage in everything:
        known = passed.get(stage.name)
        state = _recorded(known)
        say(f"  {stage.name} ({stage.action}, gate {stage.gate}): {state}")
        rows.append({"stage": stage.name, "action": stage.action, "gate": stage.gate,
                     "last": known})
    return {"app": app, "version": version, "engine": "local", "stages": rows}


def latest_version(aws: Aws, app: str) -> str | None:
    """The version of the newest stage event in the app's history."""
    for event in history.read(aws, f"app/{app}"):
        if str(event.get("event", "")).startswith("stage ") and event.get("to_release"):
            return event["to_release"]
    return None


# -- actions: each returns the stage's evidence (None: recorded elsewhere) ------------------
# The commands' output goes to stderr with Kiln's progress: stdout is for --json alone.


def _commit(aws: Aws, stage, version: str, run_id: str) -> dict:
    from packager import repo
    from packager.build import package

    settings = aws.settings
    plain, iteration = split(version)
    env = {**os.environ, "KILN_APP": settings.app, "KILN_VERSION": plain, "KILN_RELEASE": version}
    commands = []
    for command in stage.get("commands", []):
        say(f"  $ {command}")
        started = time.monotonic()
        done = subprocess.run(command, shell=True, cwd=ROOT, env=env, stdout=sys.stderr)
        commands.append({"command": command, "status": done.returncode,
                         "seconds": round(time.monotonic() - started, 1)})
        if done.returncode != 0:
            raise StageFailed(f"stage {stage.name}: `{command}` exited {done.returncode}")
    built = package(settings, settings.manifest, plain, iteration=iteration)
    evidence = {"commands": commands, "package": built["nevra"], "sha256": built["sha256"]}
    if stage.get("publish", True):
        published = repo.publish(aws, built["path"])
        evidence["published"] = published.get("action", "published")
    return evidence


def _image(aws: Aws, stage, version: str, run_id: str) -> dict:
    """Bake the version, then promote it into the deploy account, where the later stages
    roll it out (`invoke bake`, then `invoke ami.promote --to <kiln.deploy.account>`)."""
    from provisioner import bake, promote

    plain, iteration = split(version)
    result = bake.run(aws, aws.settings, plain, iteration=iteration)
    release = f"{result['version']}-{result['release']}"
    evidence = {"image": result["image_id"], "images": result["images"], "release": release,
                "reused": result["reused"], "timings": result.get("timings")}
    to = aws.settings.deploy.account
    if to != aws.account_name:
        promoted = promote.promote(aws, aws.settings.app, release, to)
        evidence["promoted"] = {"to": to, "promotions": promoted["promotions"]}
    return evidence


@contextmanager
def _candidate(aws: Aws, stage, version: str):
    """A transient environment of the release (one instance, `invoke env.up`'s kind) behind the
    load balancer of the non-production stack `stack`, removed on the way out, also on failure
    and Ctrl-C or SIGTERM (a kill -9 leaves it to its 2 h expiry and the janitor). Yields the
    environment a command against it runs with."""
    from orchestrator import selfservice

    cluster = f"{aws.settings.app}-{stage.get('stack', 'acceptance')}"
    made = selfservice.up(aws, ACCEPTANCE_OWNER, "2h", version, env_cluster=cluster)
    try:
        yield {**os.environ, **made["environment"], "KILN_APP": aws.settings.app,
               "KILN_VERSION": split(version)[0], "KILN_RELEASE": version,
               "KILN_SERVER_GROUP": made["server_group"]}
    finally:
        selfservice.down(aws, ACCEPTANCE_OWNER, env_cluster=cluster)


def _acceptance(aws: Aws, stage, version: str, run_id: str) -> dict:
    """The app's acceptance command against a transient environment of the release."""
    timeout = seconds(stage.get("timeout", "30m"), f"stage {stage.name}: timeout")
    with _candidate(aws, stage, version) as env, tempfile.TemporaryDirectory() as work:
        junit = Path(work) / "junit.xml"
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
                    "server_group": env["KILN_SERVER_GROUP"],
                    "seconds": round(time.monotonic() - started, 1), **_junit(junit)}
        if junit.exists():
            evidence["junit"] = keep(aws, version, run_id, stage.name, [junit])[0]
        if status != 0:
            raise StageFailed(f"stage {stage.name}: `{command}` exited {status}"
                              + (f" ({evidence['failures']} failures of {evidence['tests']})"
                                 if "tests" in evidence else ""))
        return evidence


def _capacity(aws: Aws, stage, version: str, run_id: str) -> dict:
    """A bounded Locust load test of a transient environment of the release, its figures held
    against the stage's thresholds; Locust's statistics and HTML report are kept in S3."""
    from orchestrator import capacity

    thresholds = stage.get("thresholds", capacity.DEFAULT_THRESHOLDS)
    with _candidate(aws, stage, version) as env, tempfile.TemporaryDirectory() as work:
        env["KILN_HEALTH_PATH"] = aws.settings.deploy.health_check.path
        figures = capacity.run(aws, stage, env, Path(work))
        kept = keep(aws, version, run_id, stage.name,
                    [Path(work) / name for name in capacity.REPORTS])
    missed = capacity.breaches(figures, thresholds)
    evidence = {**figures, "thresholds": thresholds, "breaches": missed,
                "report": kept[0].rsplit("/", 1)[0] + "/",
                **{key: stage.get(key, default) for key, default in capacity.DEFAULTS.items()}}
    say(f"  load: {figures['requests']} requests, {figures['rps']}/s, p95 {figures['p95_ms']} "
        f"ms, p99 {figures['p99_ms']} ms, errors {figures['error_percent']}%; report "
        f"{evidence['report']}")
    if missed:
        raise StageFailed(f"stage {stage.name}: {', '.join(missed)}", evidence)
    return evidence


def keep(aws: Aws, version: str, run_id: str, stage: str, files: list[Path]) -> list[str]:
    """Put a stage's reports (those that exist) in the build account's repository bucket, under
    pipeline/<app>/<release>/<run id>/<stage>/, where the stage's record points: their URIs."""
    bucket = aws.settings.repo.bucket or stacks.output(aws, "build", "RepoBucket")
    prefix = f"pipeline/{aws.settings.app}/{version}/{run_id}/{stage}"
    uris = []
    for path in files:
        if not path.exists():
            continue
        kind = {".html": "text/html", ".csv": "text/csv", ".xml": "application/xml"}
        try:
            aws.client("s3").put_object(
                Bucket=bucket, Key=f"{prefix}/{path.name}", Body=path.read_bytes(),
                ContentType=kind.get(path.suffix, "application/octet-stream"))
        except ClientError as error:
            raise KilnError(f"stage {stage}: cannot keep {path.name} in s3://{bucket}/{prefix}/: "
                            f"{error}") from None
        uris.append(f"s3://{bucket}/{prefix}/{path.name}")
    return uris


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
    if given:
        return _decided(stage, app, version, given)
    notify(aws, f"{app} {version}: waiting for approval at stage {stage.name}", {
        "event": "approval pending", "app": app, "version": version, "stage": stage.name,
        "run_id": run_id, "approve": f"invoke pipeline.approve --app {app} --version {version}"})
    raise Refused(f"stage {stage.name}: {app} {version} waits for approval: `invoke "
                  f"pipeline.approve --app {app} --version {version} --comment …` (or "
                  f"pipeline.reject), then `invoke pipeline.run --app {app} --version {version} "
                  f"--from {stage.name}`")


def _decided(stage, app: str, version: str, given: dict) -> None:
    """A manual stage someone decided: approved passes (its record is the decision's), rejected
    fails."""
    if given["outcome"] == "passed":
        say(f"  approved by {given['who']} at {given['at'][:19]}Z"
            + (f": {given['reason']}" if given.get("reason") else ""))
        return None
    raise StageFailed(f"stage {stage.name}: {app} {version} was rejected by {given['who']}"
                      + (f": {given['reason']}" if given.get("reason") else ""))


EXPLORATORY_OWNER = "exploratory"  # the environment: cluster <app>-exploratory


def _exploratory_cluster(aws: Aws, stage) -> str:
    return f"{aws.settings.app}-{stage.get('stack', 'acceptance')}"


def _exploratory(aws: Aws, stage, version: str, run_id: str) -> None:
    """A self-service environment of the release, kept up (for `ttl`, default 1d) for people to
    try; the stage waits (refused, exit 4) until someone approves or rejects it, and the
    decision removes the environment."""
    from orchestrator import selfservice

    app = aws.settings.app
    cluster = _exploratory_cluster(aws, stage)
    given = results(aws, app, version).get(stage.name)
    if given:
        selfservice.down(aws, EXPLORATORY_OWNER, env_cluster=cluster)
        return _decided(stage, app, version, given)
    url, header = _exploration(aws, stage, version, cluster)
    approve = (f"invoke pipeline.approve --app {app} --version {version} --stage {stage.name}")
    notify(aws, f"{app} {version}: up for exploratory testing at stage {stage.name}", {
        "event": "exploratory testing", "app": app, "version": version, "stage": stage.name,
        "run_id": run_id, "url": url, "header": header, "approve": approve})
    raise Refused(f"stage {stage.name}: {app} {version} is up for exploratory testing at {url} "
                  f"(with the header `{header}`): try it, then `{approve} --comment …` (or "
                  f"pipeline.reject), then `invoke pipeline.run --app {app} --version {version} "
                  f"--from {stage.name}`")


def _exploration(aws: Aws, stage, version: str, cluster: str) -> tuple[str, str]:
    """The exploratory environment of the release: the one up already, or a new one (one of
    another release, never decided, is replaced). Its URL and the header that selects it."""
    from orchestrator import cluster as model
    from orchestrator import environment, selfservice

    header = f"{aws.settings.deploy.self_service.header}: {EXPLORATORY_OWNER}"
    env = environment.load(aws, stack=EXPLORATORY_OWNER, env_cluster=cluster)
    found = model.read(env).groups
    if found and found[-1].release_id == version:
        say(f"  {found[-1].name} ({version}) is up already")
        return model.url(env), header
    if found:
        selfservice.down(aws, EXPLORATORY_OWNER, env_cluster=cluster)
    made = selfservice.up(aws, EXPLORATORY_OWNER, stage.get("ttl", "1d"), version,
                          env_cluster=cluster)
    return made["url"], header


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


ACTIONS = {"commit": _commit, "image": _image, "acceptance": _acceptance,
           "capacity": _capacity, "exploratory": _exploratory, "deploy": _deploy,
           "approval": _approval, "production": _production}


# -- approval -------------------------------------------------------------------------------


def decide(aws: Aws, version: str, approved: bool, comment: str | None = None,
           override: bool = False, stage_name: str | None = None) -> dict:
    """Approve (or reject) the release at a manual stage (approval, exploratory) as the caller:
    `stage_name`, or the first manual stage without a decision for it."""
    settings = aws.settings
    app = settings.app
    everything = stages(settings)
    version = release_id(settings, version)
    stage = _manual_stage(aws, app, version, everything, stage_name)
    run_id = tags.new_run_id()
    gate(aws, app, version, stage, everything[:everything.index(stage)], override, run_id)
    item = record(aws, app, version, stage.name, "passed" if approved else "failed", run_id,
                  {"approved": approved}, comment=comment)
    say(f"pipeline {app} {version}: {'approved' if approved else 'rejected'} at stage "
        f"{stage.name} by {item['who']}" + (f": {comment}" if comment else ""))
    if stage.action == "exploratory":  # its environment has served; the next run retries
        from orchestrator import selfservice

        try:
            selfservice.down(aws, EXPLORATORY_OWNER, env_cluster=_exploratory_cluster(aws, stage))
        except KilnError as error:
            say(f"stage {stage.name}: the environment was not removed ({error}); the next "
                f"`invoke pipeline.run --from {stage.name}` removes it")
    _answer_codepipeline(aws, app, version, stage.name, approved, item["who"], comment)
    return {"app": app, "version": version, "stage": stage.name, "approved": approved,
            "who": item["who"], "at": item["at"], "comment": comment}


def _manual_stage(aws: Aws, app: str, version: str, everything: list, name: str | None):
    manual = [s for s in everything if s.action in pipelines.MANUAL]
    if not manual:
        raise Refused(f"kiln.apps.{app}.pipeline: no approval or exploratory stage to decide")
    if name is not None:
        chosen = next((s for s in manual if s.name == name), None)
        if chosen is None:
            raise Refused(f"--stage {name}: not a manual stage (manual stages: "
                          f"{', '.join(s.name for s in manual)})")
        return chosen
    decided = results(aws, app, version)
    open_ = [s for s in manual if s.name not in decided]
    if not open_:
        raise Refused(f"{app} {version}: every manual stage has a decision "
                      f"({', '.join(s.name for s in manual)}); give --stage to decide one again")
    return open_[0]
