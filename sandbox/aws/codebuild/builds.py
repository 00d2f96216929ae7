"""CodeBuild builds run: StartBuild boots a sandbox machine and runs the buildspec's phases on it.

moto's StartBuild only records a build, and its BatchGetBuilds answers every build SUCCEEDED with
made-up phases. Here, as on AWS, a build goes SUBMITTED, QUEUED, PROVISIONING (the project's
service role is assumed, as CodeBuild assumes it: its trust policy must name
codebuild.amazonaws.com; its policies must let CodeBuild write the build's logs), DOWNLOAD_SOURCE
(the input artifact unpacked in CODEBUILD_SRC_DIR, the buildspec read: the project's inline one
or the source's file), INSTALL, PRE_BUILD, BUILD, POST_BUILD, UPLOAD_ARTIFACTS, FINALIZING and
COMPLETED, each recorded with its status and context as BatchGetBuilds reports it. The phases
run on a machine of its own, the AL2023-like machines bakes use (sandbox.machines), in one root
shell (sandbox.aws.codebuild.shell) with the project's environment variables (PLAINTEXT and
PARAMETER_STORE), the buildspec's, CodeBuild's own (CODEBUILD_BUILD_ID, CODEBUILD_SRC_DIR…), and
the temporary credentials of the service role's session, which the sandbox's IAM accepts and
evaluates; AWS_ENDPOINT_URL points the machine's AWS SDKs and CLI at the sandbox, over TLS
(AWS_CA_BUNDLE: the machine's system bundle, which trusts the sandbox's CA). A failed
command in INSTALL or PRE_BUILD ends the build (to FINALIZING); one in BUILD still runs
POST_BUILD (with CODEBUILD_BUILD_SUCCEEDING=0) and UPLOAD_ARTIFACTS, as AWS documents. Every
line goes to CloudWatch Logs, group /aws/codebuild/<project> (or the project's logsConfig),
stream <build uuid>. StopBuild stops it (STOPPED); timeoutInMinutes ends it (TIMED_OUT).

Time: QUEUED and PROVISIONING take CodeBuild's seconds on the sandbox clock (sandbox.clock); the
commands take the real time they take, and so timeoutInMinutes counts real minutes (scaling it
would end real work that AWS lets finish).
"""

from __future__ import annotations

import copy
import datetime
import functools
import os
import shlex
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from sandbox import clock
from sandbox.aws import seams
from sandbox.aws.codebuild import buildspec as spec_file
from sandbox.aws.codebuild import placement
from sandbox.aws.codebuild.shell import Shell, ShellGone
from sandbox.aws.codepipeline import service_role
from sandbox.aws.codepipeline.service_role import Refused
from sandbox.aws.elbv2 import load_balancers
from sandbox.machines import aws_names, ssh_access
from sandbox.machines import instances as machines
from sandbox.network import reach
from sandbox.sshd import Sshd, current_user

QUEUED_SECONDS = 2.0  # AWS seconds a build waits in the queue
PROVISIONING_SECONDS = 20.0  # AWS seconds to provision its container
LOCK = threading.RLock()
STATE: dict = {"dir": None}
RUNS: dict[str, Run] = {}  # build id -> its run, while it runs

ZIP_FILES = r"""cd "$1" || exit 90
shopt -s globstar dotglob nullglob
files=()
for pattern in "${@:2}"; do for f in $pattern; do [ -f "$f" ] && files+=("$f"); done; done
[ ${#files[@]} -gt 0 ] || exit 91
exec zip -q -X $ZIP_FLAGS - "${files[@]}"
"""


def apply(state_dir: Path) -> None:
    from moto.codebuild.models import CodeBuildBackend

    STATE["dir"] = state_dir
    seams.wrap(CodeBuildBackend, "start_build", _start_build,
               signature="(self, project_name: str, source_version: str | None = None, "
                         "artifact_override: dict[str, typing.Any] | None = None) -> "
                         "dict[str, typing.Any]", owner=__name__)
    seams.replace(CodeBuildBackend, "batch_get_builds", _batch_get_builds,
                  signature="(self, ids: list[str]) -> list[dict[str, typing.Any]]",
                  owner=__name__)
    seams.replace(CodeBuildBackend, "stop_build", _stop_build,
                  signature="(self, build_id: str) -> dict[str, typing.Any] | None",
                  owner=__name__)


def _start_build(moto):
    def start_build(backend, project_name, source_version=None, artifact_override=None, *,
                    sources=(), env=(), initiator=None, output=None):
        """As moto's, and the build runs. CodePipeline passes `sources` ((name, zip bytes),
        primary first), its action's `env` variables, `initiator` and `output` (called with
        the artifacts' zip, as the service role)."""
        with LOCK:
            metadata = moto(backend, project_name, source_version, artifact_override)
            project = backend.codebuild_projects[project_name]
            _describe(metadata, project.project_metadata, initiator, backend)
            run = Run(STATE["dir"], backend, project.project_metadata, metadata, list(sources),
                      list(env), output)
            RUNS[metadata["id"]] = run
        threading.Thread(target=run.main, daemon=True, name=f"build-{metadata['id']}").start()
        return copy.deepcopy(metadata)

    return start_build


def _describe(metadata: dict, project: dict, initiator: str | None, backend) -> None:
    """The build's record from its project, as CodeBuild fills it in."""
    build_uuid = metadata["id"].partition(":")[2]
    group, stream = log_names(project, build_uuid)
    region, account = backend.region_name, backend.account_id
    metadata.update({
        "source": copy.deepcopy(project.get("source") or {}),
        "environment": copy.deepcopy(project.get("environment") or {}),
        "serviceRole": project["serviceRole"],
        "timeoutInMinutes": int(project.get("timeoutInMinutes") or 60),
        "initiator": initiator or "kiln-sandbox",
        "artifacts": {},
        "logs": {"groupName": group, "streamName": stream,
                 "deepLink": f"https://console.aws.amazon.com/cloudwatch/home?region={region}"
                             f"#logEvent:group={group};stream={stream}",
                 "cloudWatchLogsArn": f"arn:aws:logs:{region}:{account}:log-group:{group}:"
                                      f"log-stream:{stream}",
                 "cloudWatchLogs": {"status": "ENABLED"} if group else {"status": "DISABLED"}},
    })
    metadata["source"].pop("auth", None)


def log_names(project: dict, build_uuid: str) -> tuple[str | None, str | None]:
    """CodeBuild's log group and stream for a build: /aws/codebuild/<project> and the build's
    uuid, or the project's logsConfig group and `<streamName>/<uuid>`; (None, None) when its
    CloudWatch Logs are disabled."""
    config = (project.get("logsConfig") or {}).get("cloudWatchLogs") or {}
    if config.get("status") == "DISABLED":
        return None, None
    group = config.get("groupName") or f"/aws/codebuild/{project['name']}"
    prefix = config.get("streamName")
    return group, f"{prefix}/{build_uuid}" if prefix else build_uuid


def _batch_get_builds(backend, ids):
    """The builds as they stand (moto answered every build finished and SUCCEEDED)."""
    with LOCK:
        return [copy.deepcopy(build) for history in backend.build_metadata_history.values()
                for build in history if build["id"] in ids]


def _stop_build(backend, build_id):
    with LOCK:
        run = RUNS.get(build_id)
        found = [b for h in backend.build_metadata_history.values() for b in h
                 if b["id"] == build_id]
    if run is not None:
        run.stop()
    return copy.deepcopy(found[0]) if found else None


def _sandbox_env(sshd: Sshd) -> dict[str, str]:
    """What Kiln's sandbox target in the build needs of the host's sandbox beside its endpoint
    (sandbox.control.BuildSandbox): where the instances' SSH is, and the time scale. AWS has
    neither: only the sandbox target reads them."""
    found = {"KILN_SANDBOX_TIME_SCALE": str(clock.scale())}
    if sshd.port:
        found["KILN_SANDBOX_SSH"] = f"{current_user()}@{sshd.host}:{sshd.port}"
    return found


def _now() -> datetime.datetime:
    """UTC without a zone, as moto keeps a build's times."""
    from moto.core.utils import utcnow

    return utcnow()


class BuildFailed(Exception):
    def __init__(self, status: str, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Run:
    """One build on its machine, phase by phase."""

    def __init__(self, state_dir, backend, project: dict, metadata: dict, sources: list,
                 env: list, output):
        self.state_dir, self.backend, self.project, self.build = (state_dir, backend, project,
                                                                  metadata)
        self.sources, self.env_override, self.output = sources, env, output
        self.role = project["serviceRole"]
        self.session = "AWSCodeBuild-" + metadata["id"].partition(":")[2]
        self.machine: str | None = None
        self.shell: Shell | None = None
        self.exports: dict[str, str] = {}  # every variable the build's shell was given
        self.stopped = threading.Event()
        self.deadline = time.monotonic() + 60 * self.build["timeoutInMinutes"]
        self.src = f"/codebuild/output/src{uuid.uuid4().int % 10**9}/src"
        self.spec: spec_file.Buildspec | None = None
        self.logs = Logs(backend.account_id, backend.region_name, metadata["logs"])

    # -- the phases ------------------------------------------------------------------------
    def main(self) -> None:
        status = "SUCCEEDED"
        try:
            self._wait_phase(self.build["phases"][-1], QUEUED_SECONDS)
            self._step("PROVISIONING", self._provision)
            self._step("DOWNLOAD_SOURCE", self._download_source)
            status = self._commands()
        except BuildFailed as failure:
            status = failure.status
        except Exception as error:  # noqa: BLE001 - a fault of the sandbox is the build's FAULT
            status = "FAULT"
            self.logs.container(f"sandbox fault: {error}")
            print(f"sandbox: build {self.build['id']} faulted: {error!r}", file=sys.stderr,
                  flush=True)
        finally:
            self._finish(status)

    def _commands(self) -> str:
        """INSTALL to UPLOAD_ARTIFACTS, with AWS's transitions; the build's status."""
        failed: BuildFailed | None = None
        for name in spec_file.PHASES:
            if failed is not None and failed.phase in ("install", "pre_build") \
                    and self.spec.phases[failed.phase].on_failure != "CONTINUE":
                break  # straight to FINALIZING; a failed BUILD still runs POST_BUILD
            try:
                self._step(name.upper(), lambda n=name: self._phase(n))
            except BuildFailed as failure:
                if failure.status != "FAILED":
                    raise
                failure.phase, failed = name, failed or failure
        if failed is None or failed.phase in ("build", "post_build"):
            try:
                self._step("UPLOAD_ARTIFACTS", self._upload)
            except BuildFailed as failure:
                failed = failed or failure
        return "SUCCEEDED" if failed is None else failed.status

    def _step(self, phase: str, body) -> None:
        if self.stopped.is_set():
            raise BuildFailed("STOPPED", "", "stopped")
        record = self._begin(phase)
        self.logs.container(f"Entering phase {phase}")
        try:
            body()
        except BuildFailed as failure:
            self._end(record, failure.status, failure.code, failure.message)
            raise
        except (ShellGone, Refused) as error:
            status = "STOPPED" if self.stopped.is_set() else "FAILED"
            code = "" if status == "STOPPED" else "CLIENT_ERROR"
            self._end(record, status, code, str(error) or "the build's shell ended")
            raise BuildFailed(status, code, str(error)) from None
        except Exception as error:  # a fault of the sandbox (a machine that did not boot)
            self._end(record, "FAULT", "", str(error))
            raise
        finally:
            self.logs.container(f"Phase complete: {phase} State: "
                                f"{record.get('phaseStatus', 'SUCCEEDED')}")
        self._end(record, "SUCCEEDED")

    def _provision(self) -> None:
        started = time.monotonic()
        if not service_role.trusts(self.role, "codebuild.amazonaws.com", self.project["arn"]):
            raise BuildFailed("FAILED", "ACCESS_DENIED",
                              f"CodeBuild is not authorized to perform: sts:AssumeRole on "
                              f"{self.role}")
        self.logs.open(self.role, self.session)
        credentials = self._assume()
        place = placement.place(self.backend, self.project, self.role, self.session)
        self.machine = "codebuild-" + uuid.uuid4().hex[:17]
        # A build reaches the instances' SSH, as a build in a VPC reaches its instances: in the
        # sandbox every instance's SSH is the sandbox sshd on the host. And the load balancers
        # its place reaches, by their DNS names (sandbox.network.reach).
        sshd = Sshd(self.state_dir)
        network = load_balancers.NETWORK
        locate = functools.partial(placement.located, self.backend, self.project) \
            if "egress" in place else None  # a VPC's routes and groups change as it runs
        balancers = reach.register(self.state_dir, self.machine, place,
                                   network.listeners if network is not None else None, locate)
        ssh_access.launch(self.state_dir, self.machine, place["private"],
                          reach=(sshd.port,) if sshd.port else (), balancers=balancers)
        if network is not None:
            network.reconcile()  # the balancers know what its source address stands for
        self.exports = {**self._codebuild_env(), **credentials, **_sandbox_env(sshd),
                        **self._project_env()}
        self._open_shell()
        self._sleep_until(started, PROVISIONING_SECONDS)

    def _download_source(self) -> None:
        source = self.project.get("source") or {}
        if not self.sources and source.get("type") == "S3":  # a direct build of an S3 source
            bucket, _, key = source["location"].partition("/")
            found = service_role.read_object(self.role, self.session, self.backend.region_name,
                                             bucket, key)
            self.sources = [("source", found.value)]
        for number, (name, body) in enumerate(self.sources):
            folder = self.src if number == 0 else f"{self.src}_{name}"
            self._into_machine(folder, body)
            if number:
                self._export({f"CODEBUILD_SRC_DIR_{name}": folder})
        self._run_plain(f"mkdir -p {shlex.quote(self.src)} && cd {shlex.quote(self.src)}")
        text = self.project.get("source", {}).get("buildspec") or "buildspec.yml"
        if not spec_file.is_inline(text):
            text = self._read_file(text)
        try:
            self.spec = spec_file.parse(text)
        except spec_file.BuildspecError as error:
            raise BuildFailed("FAILED", "YAML_FILE_ERROR", str(error)) from None
        env = {**self.spec.variables, **{k: self._parameter(v)
                                         for k, v in self.spec.parameters.items()}}
        self._export(env)

    def _phase(self, name: str) -> None:
        phase = self.spec.phases.get(name) or spec_file.Phase()
        failure = None
        for command in phase.commands:
            self.logs.container(f"Running command {command}")
            status = self._run(command)
            if status != 0:
                failure = BuildFailed("FAILED", "COMMAND_EXECUTION_ERROR",
                                      f"Error while executing command: {command}. Reason: exit "
                                      f"status {status}")
                break
        for command in phase.finally_:
            self.logs.container(f"Running command {command}")
            self._run(command)
        if failure is not None:
            self._export({"CODEBUILD_BUILD_SUCCEEDING": "0"})
            self.logs.container(f"Command did not exit successfully {failure.message}")
            raise failure

    def _upload(self) -> None:
        wanted = self.spec.files if self.spec else []
        if not wanted or (self.output is None and not self._s3_output()):
            return
        base = f"{self.src}/{self.spec.base_directory}".rstrip("/")
        flags = "-r -j" if self.spec.discard_paths else "-r"
        argv = [*machines.enter_command(self.state_dir, self.machine), "sudo", "-n",
                "env", f"ZIP_FLAGS={flags}", "/bin/bash", "-c", ZIP_FILES, "zip", base,
                *wanted]
        made = subprocess.run(argv, capture_output=True, timeout=self._left() or 1)
        if made.returncode == 91:
            raise BuildFailed("FAILED", "CLIENT_ERROR", "no matching artifact paths found")
        if made.returncode != 0:
            raise BuildFailed("FAILED", "CLIENT_ERROR",
                              f"could not zip the artifacts: {made.stderr.decode()[-300:]}")
        if self.output is not None:
            self.output(made.stdout, self.role, self.session)
        else:
            bucket, key = self._s3_output()
            service_role.write_object(self.role, self.session, self.backend.region_name,
                                      bucket, key, made.stdout)
            self.build["artifacts"] = {"location": f"arn:aws:s3:::{bucket}/{key}"}

    def _finish(self, status: str) -> None:
        record = self._begin("FINALIZING")
        if self.shell is not None:
            self.shell.close()
        if self.machine is not None:
            reach.forget(self.machine)
            ssh_access.terminate(self.state_dir, self.machine)
        self._end(record, "SUCCEEDED")
        with LOCK:
            self.build["phases"].append({"phaseType": "COMPLETED", "startTime": _now()})
            self.build.update({"currentPhase": "COMPLETED", "buildStatus": status,
                               "buildComplete": True, "endTime": _now()})
            RUNS.pop(self.build["id"], None)

    # -- helpers ---------------------------------------------------------------------------
    def stop(self) -> None:
        self.stopped.set()
        if self.shell is not None:
            self.shell.close()

    def _begin(self, phase: str) -> dict:
        record = {"phaseType": phase, "startTime": _now()}
        with LOCK:
            self.build["phases"].append(record)
            self.build["currentPhase"] = phase
        return record

    def _end(self, record: dict, status: str, code: str = "", message: str = "") -> None:
        end = _now()
        with LOCK:
            record.update({"phaseStatus": status, "endTime": end,
                           "durationInSeconds": int((end - record["startTime"]).total_seconds()),
                           "contexts": [{"statusCode": code, "message": message}]})

    def _wait_phase(self, record: dict, aws_seconds: float) -> None:
        self._sleep_until(time.monotonic(), aws_seconds)
        self._end(record, "SUCCEEDED")

    def _sleep_until(self, started: float, aws_seconds: float) -> None:
        while time.monotonic() < started + aws_seconds * clock.scale():
            if self.stopped.wait(0.02):
                raise BuildFailed("STOPPED", "", "stopped")

    def _left(self) -> float:
        return max(self.deadline - time.monotonic(), 0)

    def _run(self, command: str) -> int:
        try:
            return self.shell.run(command, timeout=self._left())
        except TimeoutError:
            self.shell.close()
            raise BuildFailed("TIMED_OUT", "BUILD_TIMED_OUT",
                              f"Build has timed out. Timeout: {self.build['timeoutInMinutes']} "
                              "minutes") from None
        except ShellGone:
            if self.stopped.is_set():
                raise
            # The command ended the shell (`exit 3`): its status is the shell's; the next
            # command gets a new shell with the build's variables, in the source directory.
            status = self.shell.process.wait(timeout=10)
            self.shell.close()
            self._open_shell()
            self._run_plain(f"cd {shlex.quote(self.src)}")
            return status

    def _open_shell(self) -> None:
        self.shell = Shell(self.state_dir, self.machine, self.exports, self.logs.line)

    def _export(self, variables: dict[str, str]) -> None:
        self.exports.update(variables)
        self.shell.send("".join(f"export {k}={shlex.quote(v)}\n"
                                for k, v in variables.items()))

    def _run_plain(self, command: str) -> None:
        status = self._run(command)
        if status != 0:
            raise BuildFailed("FAULT", "CLIENT_ERROR", f"could not run: {command}")

    def _into_machine(self, folder: str, body: bytes) -> None:
        script = (f"mkdir -p {shlex.quote(folder)} && cd {shlex.quote(folder)} && "
                  "cat > ../.source.zip && unzip -q -o ../.source.zip && rm ../.source.zip")
        argv = [*machines.enter_command(self.state_dir, self.machine), "sudo", "-n",
                "/bin/sh", "-c", script]
        done = subprocess.run(argv, input=body, capture_output=True, timeout=120)
        if done.returncode != 0:
            raise BuildFailed("FAILED", "CLIENT_ERROR", "could not unpack the source: "
                              + done.stderr.decode(errors="replace")[-300:])

    def _read_file(self, path: str) -> str:
        argv = [*machines.enter_command(self.state_dir, self.machine), "sudo", "-n",
                "cat", f"{self.src}/{path}"]
        done = subprocess.run(argv, capture_output=True, timeout=30)
        if done.returncode != 0:
            raise BuildFailed("FAILED", "YAML_FILE_ERROR",
                              f"YAML_FILE_ERROR: stat {self.src}/{path}: no such file or "
                              "directory")
        return done.stdout.decode(errors="replace")

    def _assume(self) -> dict[str, str]:
        """The service role's temporary credentials, as CodeBuild gives a build."""
        from moto.sts.models import sts_backends

        account = self.role.split(":")[4]
        session = sts_backends[account]["aws"].assume_role(
            region_name=self.backend.region_name, role_session_name=self.session,
            role_arn=self.role, policy="", duration=3600, external_id="")
        return {"AWS_ACCESS_KEY_ID": session.access_key_id,
                "AWS_SECRET_ACCESS_KEY": session.secret_access_key,
                "AWS_SESSION_TOKEN": session.session_token}

    def _codebuild_env(self) -> dict[str, str]:
        region = self.backend.region_name
        build = self.build
        return {"AWS_REGION": region, "AWS_DEFAULT_REGION": region,
                # The sandbox's endpoint over TLS, as a build on AWS calls AWS's; the machine's
                # system bundle holds the sandbox's CA (sandbox.machines.aws_names).
                "AWS_ENDPOINT_URL": f"https://127.0.0.1:{os.environ.get('MOTO_PORT', '5000')}",
                "AWS_CA_BUNDLE": aws_names.system_bundle(),
                "CODEBUILD_BUILD_ID": build["id"], "CODEBUILD_BUILD_ARN": build["arn"],
                "CODEBUILD_BUILD_NUMBER": str(build["buildNumber"]),
                "CODEBUILD_BUILD_IMAGE": build["environment"].get("image", ""),
                "CODEBUILD_INITIATOR": build["initiator"],
                "CODEBUILD_SOURCE_VERSION": build.get("sourceVersion") or "",
                "CODEBUILD_SRC_DIR": self.src, "CODEBUILD_BUILD_SUCCEEDING": "1",
                "CODEBUILD_LOG_PATH": build["logs"]["streamName"] or "",
                "CODEBUILD_START_TIME": str(int(build["startTime"].timestamp() * 1000)),
                "HOME": "/root"}

    def _project_env(self) -> dict[str, str]:
        found = {}
        variables = self.build["environment"].get("environmentVariables") or []
        for variable in [*variables, *self.env_override]:
            kind = variable.get("type", "PLAINTEXT")
            value = str(variable.get("value", ""))
            if kind == "PARAMETER_STORE":
                value = self._parameter(value)
            elif kind != "PLAINTEXT":
                raise BuildFailed("FAILED", "CLIENT_ERROR", f"the sandbox does not resolve "
                                  f"{kind} environment variables ({variable.get('name')})")
            found[variable["name"]] = value
        return found

    def _parameter(self, name: str) -> str:
        """An SSM parameter's value, read as the service role (ssm:GetParameters)."""
        from moto.ssm.models import ssm_backends

        region, account = self.backend.region_name, self.backend.account_id
        arn = f"arn:aws:ssm:{region}:{account}:parameter/{name.lstrip('/')}"
        service_role.check(self.role, self.session, "ssm:GetParameters", arn, region)
        found = ssm_backends[account][region].get_parameter(name)
        if found is None:
            raise BuildFailed("FAILED", "CLIENT_ERROR",
                              f"Parameter does not exist: {name}")
        return found.value

    def _s3_output(self) -> tuple[str, str] | None:
        artifacts = self.project.get("artifacts") or {}
        if artifacts.get("type") != "S3":
            return None
        name = artifacts.get("name") or self.project["name"]
        middle = self.build["id"].partition(":")[2] \
            if artifacts.get("namespaceType") == "BUILD_ID" else ""
        key = "/".join(p for p in (artifacts.get("path", ""), middle, name) if p)
        return artifacts["location"], key


class Logs:
    """The build's CloudWatch Logs stream, written as the service role: CodeBuild refuses to
    start a build whose role may not (CLIENT_ERROR in PROVISIONING)."""

    def __init__(self, account: str, region: str, names: dict):
        self.account, self.region = account, region
        self.group, self.stream = names.get("groupName"), names.get("streamName")
        self.ready = False
        self.early: list[str] = []

    def open(self, role: str, session: str) -> None:
        if not self.group:
            return
        from moto.logs.models import logs_backends

        backend = logs_backends[self.account][self.region]
        arn = f"arn:aws:logs:{self.region}:{self.account}:log-group:{self.group}"
        try:
            if self.group not in backend.groups:
                service_role.check(role, session, "logs:CreateLogGroup", f"{arn}:*",
                                   self.region)
            for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
                service_role.check(role, session, action, f"{arn}:log-stream:{self.stream}",
                                   self.region)
        except Refused:
            raise BuildFailed("FAILED", "CLIENT_ERROR",
                              f"Service role {role} does not allow AWS CodeBuild to create "
                              f"Amazon CloudWatch Logs log streams for build "
                              f"arn:aws:codebuild:{self.region}:{self.account}") from None
        with LOCK:
            if self.group not in backend.groups:
                backend.create_log_group(self.group, {})
            backend.groups[self.group].create_log_stream(self.stream)
            self.ready = True
        for line in self.early:
            self.line(line)

    def container(self, text: str) -> None:
        moment = _now()
        self.line(f"[Container] {moment:%Y/%m/%d %H:%M:%S}.{moment.microsecond:06d} {text}")

    def line(self, text: str) -> None:
        if not self.group:
            return
        if not self.ready:
            self.early.append(text)
            return
        from moto.logs.models import logs_backends

        event = {"timestamp": int(time.time() * 1000), "message": text}
        with LOCK:
            group = logs_backends[self.account][self.region].groups.get(self.group)
            if group is not None and self.stream in group.streams:
                group.put_log_events(self.stream, [event])
