"""A pipeline execution, run as CodePipeline runs one.

Stage by stage: an execution enters a stage when its inbound transition is enabled and no other
execution is in it (a later one waiting at the same transition supersedes it: SUPERSEDED mode,
the default); in the stage, actions run by runOrder, those of the same runOrder together; a
failed action fails the stage and the execution. The pipeline's role does what the pipeline
does (sandbox.aws.codepipeline.service_role): reads the S3 source object, writes artifacts to
the artifact store, starts and reads builds, publishes approval notices.

Actions the sandbox runs: Source/AWS/S3 (the source object, a zip, becomes the output artifact),
Build and Test/AWS/CodeBuild (a build of the project, sandbox.aws.codebuild.builds, its input
artifacts as sources, its buildspec's artifacts as the output), Approval/AWS/Manual (a token;
it waits for PutApprovalResult, or fails after 7 days of AWS time). Any other provider fails its
action saying the sandbox does not run it.
"""

from __future__ import annotations

import datetime
import json
import re
import secrets
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from sandbox import clock
from sandbox.aws.codepipeline import service_role
from sandbox.aws.codepipeline.service_role import Refused

LOCK = threading.RLock()
TICK = 0.02  # real seconds between looks at what an execution waits for
TRANSITION_SECONDS = 1.0  # AWS seconds from one stage to the next
APPROVAL_DAYS = 7  # an approval not answered within this fails, as on AWS
BUILD_ACTIONS = {("Build", "AWS", "CodeBuild"), ("Test", "AWS", "CodeBuild")}
REFERENCE = re.compile(r"#\{([A-Za-z0-9@\-_]+)\.([A-Za-z0-9@\-_]+)\}")  # #{namespace.name}


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class ActionRun:
    """One action's execution: what GetPipelineState's latestExecution and
    ListActionExecutions report."""

    execution_id: str
    stage: str
    action: dict
    pipeline_version: int
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = "InProgress"
    started: datetime.datetime = field(default_factory=now)
    updated: datetime.datetime = field(default_factory=now)
    summary: str | None = None
    token: str | None = None
    external_id: str | None = None
    error: dict | None = None
    inputs: list = field(default_factory=list)  # [(name, bucket, key)]
    outputs: list = field(default_factory=list)
    variables: dict = field(default_factory=dict)
    updated_by: str | None = None
    revision: str | None = None
    resolved: dict = field(default_factory=dict)  # its configuration, variables resolved

    def end(self, status: str, summary: str | None = None, error: str | None = None) -> None:
        with LOCK:
            self.status, self.updated = status, now()
            if summary is not None:
                self.summary = summary
            if error is not None:
                self.error = {"code": "JobFailed", "message": error}


class PipelineState:
    """What the sandbox keeps beside moto's pipeline: transitions, stages, action runs."""

    def __init__(self) -> None:
        self.transitions: dict[str, dict] = {}  # stage -> {enabled, reason, by, at}
        self.occupant: dict[str, str] = {}  # stage -> execution id in it
        self.waiting: dict[str, str] = {}  # stage -> execution id waiting to enter it
        self.latest: dict[str, tuple[str, str]] = {}  # stage -> (execution id, status)
        self.actions: dict[tuple[str, str], ActionRun] = {}  # (stage, action) -> latest run
        self.runs: list[ActionRun] = []  # every action run, oldest first

    def enabled(self, stage: str) -> bool:
        return self.transitions.get(stage, {}).get("enabled", True)


def state(pipeline) -> PipelineState:
    """The sandbox's state of moto's pipeline (made on first use)."""
    with LOCK:
        found = pipeline.__dict__.get("sandbox_state")
        if found is None:
            found = pipeline.__dict__["sandbox_state"] = PipelineState()
        return found


def set_transition(pipeline, stage: str, enabled: bool, reason: str | None, by: str) -> None:
    with LOCK:
        state(pipeline).transitions[stage] = {"enabled": enabled, "reason": reason,
                                              "by": by, "at": now()}


class Stopped(Exception):
    """The execution ends here: superseded, stopped, or its pipeline gone."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


class Execution:
    """One execution of a pipeline, in a thread of its own."""

    def __init__(self, backend, pipeline, execution):
        self.backend, self.pipeline, self.record = backend, pipeline, execution
        self.definition = json.loads(json.dumps(pipeline.pipeline))  # as it was at the start
        self.id = execution.pipeline_execution_id
        self.state = state(pipeline)
        self.artifacts: dict[str, tuple[str, str]] = {}  # name -> (bucket, key)
        self.stop_mode: str | None = None  # "abandon" or "finish"
        # What `#{namespace.name}` resolves to: the pipeline's variables, then the output
        # variables of each action with a namespace once it succeeded.
        self.namespaces = {"variables": {v["name"]: v["value"] for v in execution.variables}}

    def start(self) -> None:
        self._set_status("InProgress")
        threading.Thread(target=self.main, daemon=True, name=f"pipeline-{self.id}").start()

    def main(self) -> None:
        stage = None
        try:
            for number, stage in enumerate(self.definition["stages"]):
                self._enter(stage["name"], first=number == 0)
                ok = self._run_stage(stage)
                if self.stop_mode:  # its abandoned actions are not a failure
                    self._leave(stage["name"], "Stopped")
                    return self._set_status("Stopped")
                if not ok:
                    self._leave(stage["name"], "Failed")
                    return self._set_status("Failed", f"Stage {stage['name']} failed")
                self._leave(stage["name"], "Succeeded")
                if number + 1 < len(self.definition["stages"]):
                    self._pause(TRANSITION_SECONDS)
            self._set_status("Succeeded")
        except Stopped as stop:
            if stage is not None and self.state.occupant.get(stage["name"]) == self.id:
                self._leave(stage["name"], stop.status)
            self._set_status(stop.status)
        except Exception as error:  # noqa: BLE001 - a fault of the sandbox fails the execution
            print(f"sandbox: pipeline execution {self.id} faulted: {error!r}", file=sys.stderr,
                  flush=True)
            self._set_status("Failed", f"sandbox fault: {error}")

    # -- stages ------------------------------------------------------------------------------
    def _enter(self, stage: str, first: bool) -> None:
        """Wait at the stage's inbound transition until it is enabled and the stage is free;
        a later execution arriving there meanwhile supersedes this one."""
        with LOCK:
            self.state.waiting[stage] = self.id
        while True:
            self._check_alive()
            with LOCK:
                if self.stop_mode:  # stopped while it waited: it never enters
                    if self.state.waiting.get(stage) == self.id:
                        del self.state.waiting[stage]
                    raise Stopped("Stopped")
                if self.state.waiting.get(stage) != self.id:
                    raise Stopped("Superseded")
                free = self.state.occupant.get(stage) in (None, self.id)
                if free and (first or self.state.enabled(stage)):
                    del self.state.waiting[stage]
                    self.state.occupant[stage] = self.id
                    self.state.latest[stage] = (self.id, "InProgress")
                    return
            time.sleep(TICK)

    def _leave(self, stage: str, status: str) -> None:
        """The stage is done with (a later execution may run it while this one waits at the
        next transition)."""
        with LOCK:
            self.state.latest[stage] = (self.id, status)
            if self.state.occupant.get(stage) == self.id:
                del self.state.occupant[stage]

    def _run_stage(self, stage: dict) -> bool:
        orders = sorted({int(a.get("runOrder", 1)) for a in stage["actions"]})
        for order in orders:
            runs = [self._begin(stage["name"], a) for a in stage["actions"]
                    if int(a.get("runOrder", 1)) == order]
            threads = [threading.Thread(target=self._run_action, args=(run,), daemon=True)
                       for run in runs]
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(TICK)
            if any(run.status != "Succeeded" for run in runs):
                return False
            if self.stop_mode:
                return True
        return True

    def _begin(self, stage: str, action: dict) -> ActionRun:
        run = ActionRun(self.id, stage, action, self.definition.get("version", 1))
        run.inputs = [(a["name"], *self.artifacts.get(a["name"], ("", "")))
                      for a in action.get("inputArtifacts") or []]
        run.resolved = {key: self._resolve(value)
                        for key, value in (action.get("configuration") or {}).items()}
        with LOCK:
            self.state.actions[(stage, action["name"])] = run
            self.state.runs.append(run)
        return run

    def _resolve(self, value):
        """A configuration value with its variables resolved; one that names no variable of
        this execution stays as it is and fails the action (_run_action)."""
        if not isinstance(value, str):
            return value

        def found(match) -> str:
            return str(self.namespaces.get(match[1], {}).get(match[2], match[0]))

        return REFERENCE.sub(found, value)

    # -- actions -----------------------------------------------------------------------------
    def _run_action(self, run: ActionRun) -> None:
        kind = run.action["actionTypeId"]
        key = (kind["category"], kind["owner"], kind["provider"])
        unresolved = [m[0] for v in run.resolved.values() if isinstance(v, str)
                      for m in REFERENCE.finditer(v)]
        try:
            if unresolved:
                run.end("Failed", error=f"Unable to resolve the variables {', '.join(unresolved)} "
                        f"in the action configuration")
            elif key == ("Source", "AWS", "S3"):
                self._source_s3(run)
            elif key in BUILD_ACTIONS:
                self._codebuild(run)
            elif key == ("Approval", "AWS", "Manual"):
                self._approval(run)
            else:
                run.end("Failed", error=f"the sandbox does not run {'/'.join(key)} actions")
        except Refused as refused:
            run.end("Failed", error=str(refused))
        except Stopped:
            run.end("Abandoned")
        except Exception as error:  # noqa: BLE001 - the action fails, the server goes on
            run.end("Failed", error=f"sandbox fault: {error}")
        if run.status == "Succeeded" and run.action.get("namespace"):
            with LOCK:
                self.namespaces[run.action["namespace"]] = dict(run.variables)

    def _source_s3(self, run: ActionRun) -> None:
        config = run.resolved
        bucket, key = config["S3Bucket"], config["S3ObjectKey"]
        role = self._role(run)
        found = service_role.read_object(role, self._session(), self.backend.region_name,
                                         bucket, key)
        self._pause(2.0)
        version = getattr(found, "version_id", None)
        run.revision = version
        run.variables = {"BucketName": bucket, "ObjectKey": key, "ETag": found.etag.strip('"'),
                         "VersionId": str(version or "")}
        for output in run.action.get("outputArtifacts") or []:
            self._store(run, output["name"], found.value, role)
        run.end("Succeeded", summary=f"Amazon S3 version id: {version}")

    def _codebuild(self, run: ActionRun) -> None:
        from moto.codebuild.models import codebuild_backends

        config = run.resolved
        project = config["ProjectName"]
        region, account = self.backend.region_name, self.backend.account_id
        project_arn = f"arn:aws:codebuild:{region}:{account}:project/{project}"
        role = self._role(run)
        service_role.check(role, self._session(), "codebuild:StartBuild", project_arn, region)
        service_role.check(role, self._session(), "codebuild:BatchGetBuilds", project_arn,
                           region)
        builds = codebuild_backends[account][region]
        if project not in builds.codebuild_projects:
            raise Refused(f"Project cannot be found: {project_arn}")
        build_role = builds.codebuild_projects[project].project_metadata["serviceRole"]
        session = "AWSCodeBuild-pipeline"
        sources = [(name, self._fetch(build_role, session, bucket, key))
                   for name, bucket, key in self._ordered_inputs(run, config)]
        env = json.loads(config.get("EnvironmentVariables") or "[]")
        outputs = run.action.get("outputArtifacts") or []

        def output(body: bytes, role_arn: str, role_session: str) -> None:
            for artifact in outputs[:1]:
                self._store(run, artifact["name"], body, role_arn, role_session)

        build = builds.start_build(project, sources=sources, env=env, output=output,
                                   initiator=f"codepipeline/{self.pipeline.pipeline['name']}")
        run.external_id = build["id"]
        self._wait_for_build(run, builds, build["id"])

    def _ordered_inputs(self, run: ActionRun, config: dict) -> list:
        primary = config.get("PrimarySource")
        return sorted(run.inputs, key=lambda i: i[0] != primary) if primary else run.inputs

    def _wait_for_build(self, run: ActionRun, builds, build_id: str) -> None:
        while True:
            if self.stop_mode == "abandon":
                builds.stop_build(build_id)
                raise Stopped("Stopped")
            [build] = builds.batch_get_builds([build_id])
            if build.get("buildComplete"):
                break
            time.sleep(TICK * 5)
        status = build["buildStatus"]
        if status == "SUCCEEDED":
            return run.end("Succeeded")
        failed = next((p for p in build["phases"] if p.get("phaseStatus") not in
                       (None, "SUCCEEDED")), {})
        context = (failed.get("contexts") or [{}])[0]
        run.end("Failed", error=f"Build terminated with state: {status}. Phase: "
                f"{failed.get('phaseType')}, Code: {context.get('statusCode')}, Message: "
                f"{context.get('message')}")

    def _approval(self, run: ActionRun) -> None:
        config = run.resolved
        run.token = str(uuid.uuid4())
        topic = config.get("NotificationArn")
        if topic:
            self._notify(run, topic, config)
        expires = clock.after(APPROVAL_DAYS * 86400)
        while run.status == "InProgress":
            self._check_alive()
            if self.stop_mode == "abandon":
                raise Stopped("Stopped")
            if clock.passed(expires):
                return run.end("Failed", error="The approval action has expired")
            time.sleep(TICK)

    def _notify(self, run: ActionRun, topic: str, config: dict) -> None:
        from moto.sns.models import sns_backends

        region = topic.split(":")[3]
        service_role.check(self._role(run), self._session(), "sns:Publish", topic, region)
        message = {"region": self.backend.region_name, "approval": {
            "pipelineName": self.pipeline.pipeline["name"], "stageName": run.stage,
            "actionName": run.action["name"], "token": run.token,
            "customData": config.get("CustomData"),
            "externalEntityLink": config.get("ExternalEntityLink")}}
        subject = (f"APPROVAL NEEDED: AWS CodePipeline {self.pipeline.pipeline['name']} for "
                   f"action {run.action['name']}")
        sns_backends[topic.split(":")[4]][region].get_topic(topic).publish(
            json.dumps(message), subject=subject[:100])

    # -- artifacts ---------------------------------------------------------------------------
    def _store(self, run: ActionRun, name: str, body: bytes, role: str,
               session: str | None = None) -> None:
        """An output artifact into the artifact store, as AWS names it:
        <pipeline name, 20 chars>/<artifact name, 10 chars>/<random>."""
        store = self.definition.get("artifactStore") or {}
        bucket = store.get("location")
        key = (f"{self.pipeline.pipeline['name'][:20]}/{name[:10]}/"
               f"{secrets.token_urlsafe(5)[:7]}")
        service_role.write_object(role, session or self._session(), self.backend.region_name,
                                  bucket, key, body)
        self.artifacts[name] = (bucket, key)
        run.outputs.append((name, bucket, key))

    def _fetch(self, role: str, session: str, bucket: str, key: str) -> bytes:
        found = service_role.read_object(role, session, self.backend.region_name, bucket, key)
        return found.value

    def _role(self, run: ActionRun) -> str:
        return run.action.get("roleArn") or self.definition["roleArn"]

    def _session(self) -> str:
        return f"codepipeline-{self.id[:8]}"

    # -- the execution -------------------------------------------------------------------------
    def _pause(self, aws_seconds: float) -> None:
        moment = clock.after(aws_seconds)
        while not clock.passed(moment):
            self._check_alive()
            time.sleep(TICK)

    def _check_alive(self) -> None:
        """Its pipeline deleted (or the sandbox reset) ends it."""
        if self.backend.pipelines.get(self.pipeline.pipeline["name"]) is not self.pipeline:
            raise Stopped("Stopped")

    def _set_status(self, status: str, summary: str | None = None) -> None:
        with LOCK:
            self.record.status = status
            if summary is not None:
                self.record.status_summary = summary
            self.record.last_update_time = now()
