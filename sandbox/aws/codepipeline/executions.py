"""CodePipeline's executions run (sandbox.aws.codepipeline.engine), and the API reports them.

moto records StartPipelineExecution as Succeeded at once and answers none of GetPipelineState,
ListActionExecutions, PutApprovalResult, DisableStageTransition, EnableStageTransition or
StopPipelineExecution. Here StartPipelineExecution starts an execution that runs; those
operations answer as AWS documents them (their errors too: StageNotFoundException,
ActionNotFoundException, InvalidApprovalTokenException, ApprovalAlreadyCompletedException,
PipelineExecutionNotStoppableException); GetPipelineExecution and ListPipelineExecutions report
the execution's status as it moves. A new version of an S3 source object starts an execution
of each pipeline whose S3 source action polls it (PollForSourceChanges, true unless "false"),
after CodePipeline's polling interval on the sandbox clock; one that does not poll is started by
an EventBridge rule on the object's events (sandbox.aws.events.delivery).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

from moto.codepipeline.exceptions import CodePipelineException
from moto.core.responses import ActionResult, EmptyResult

from sandbox import clock
from sandbox.aws import seams
from sandbox.aws.codepipeline import engine
from sandbox.aws.codepipeline.engine import LOCK, Execution, set_transition, state

POLL_SECONDS = 60.0  # AWS seconds between CodePipeline's looks at a polled S3 source


class StageNotFoundException(CodePipelineException):
    code = "StageNotFoundException"


class ActionNotFoundException(CodePipelineException):
    code = "ActionNotFoundException"


class InvalidApprovalTokenException(CodePipelineException):
    code = "InvalidApprovalTokenException"


class ApprovalAlreadyCompletedException(CodePipelineException):
    code = "ApprovalAlreadyCompletedException"


class PipelineExecutionNotStoppableException(CodePipelineException):
    code = "PipelineExecutionNotStoppableException"


class ValidationException(CodePipelineException):
    code = "ValidationException"


def apply(state_dir: Path) -> None:
    from moto.codepipeline.models import CodePipelineBackend
    from moto.codepipeline.responses import CodePipelineResponse
    from moto.s3.models import S3Backend

    seams.wrap(CodePipelineBackend, "start_pipeline_execution", _start,
               signature="(self, name: str, variables: list[dict[str, str]] | None) -> str",
               owner=__name__)
    seams.wrap(CodePipelineBackend, "create_pipeline", _create,
               signature="(self, pipeline: dict[str, typing.Any], tags: list[dict[str, str]]) "
                         "-> tuple[dict[str, typing.Any], list[dict[str, str]]]", owner=__name__)
    for name in ("get_pipeline_execution", "list_pipeline_executions"):
        seams.wrap(CodePipelineResponse, name, _with_trigger,
                   signature="(self) -> moto.core.responses.ActionResult", owner=__name__)
    for name, method in (("get_pipeline_state", get_pipeline_state),
                         ("put_approval_result", put_approval_result),
                         ("disable_stage_transition", disable_stage_transition),
                         ("enable_stage_transition", enable_stage_transition),
                         ("list_action_executions", list_action_executions),
                         ("stop_pipeline_execution", stop_pipeline_execution)):
        seams.add(CodePipelineResponse, name, method, owner=__name__)
    seams.wrap(S3Backend, "put_object", _polled_sources,
               signature="(self, bucket_name: 'str', key_name: 'str', value: 'bytes', "
                         "storage: 'str | None' = None, etag: 'str | None' = None, "
                         "multipart: 'FakeMultipart | None' = None, encryption: 'str | None' = "
                         "None, kms_key_id: 'str | None' = None, bucket_key_enabled: 'Any' = "
                         "None, lock_mode: 'str | None' = None, lock_legal_status: 'str | None' "
                         "= None, lock_until: 'str | None' = None, checksum_value: 'str | None' "
                         "= None, request_method: 'str | None' = 'PUT', disable_notification: "
                         "'bool | None' = False) -> 'FakeKey'", owner=__name__)


def _start(moto):
    def start_pipeline_execution(backend, name, variables, trigger="StartPipelineExecution",
                                 detail=None):
        """`trigger` and `detail` as the execution reports them: the caller's ARN unless
        given (an EventBridge rule's, say)."""
        execution_id = moto(backend, name, variables)
        pipeline = backend.pipelines[name]
        record = pipeline.executions[execution_id]
        record.variables = _variables(pipeline, variables)
        record.trigger = {"triggerType": trigger,
                          "triggerDetail": _caller_arn(None) if detail is None else detail}
        record.sandbox_run = Execution(backend, pipeline, record)
        record.sandbox_run.start()
        return execution_id

    return start_pipeline_execution


def _variables(pipeline, given: list[dict] | None) -> list[dict]:
    """The execution's pipeline variables: each declared one, its default unless given."""
    declared = pipeline.pipeline.get("variables") or []
    values = {v["name"]: v.get("defaultValue", "") for v in declared}
    values.update({v["name"]: v["value"] for v in given or []})
    return [{"name": name, "value": value} for name, value in values.items()]


_CREATING = threading.local()


@contextmanager
def creating(disabled: list[tuple[str, str | None]]):
    """Transitions CloudFormation disables (DisableInboundStageTransitions) for the pipeline
    CreatePipeline makes meanwhile, before its first execution starts."""
    _CREATING.disabled = disabled
    try:
        yield
    finally:
        _CREATING.disabled = []


def _create(moto):
    def create_pipeline(backend, pipeline, tags):
        made = moto(backend, pipeline, tags)
        found = backend.pipelines[pipeline["name"]]
        for stage, reason in getattr(_CREATING, "disabled", []):
            set_transition(found, stage, False, reason, "AWS CloudFormation")
        # As on AWS: a new pipeline starts an execution (trigger CreatePipeline).
        backend.start_pipeline_execution(pipeline["name"], None, trigger="CreatePipeline")
        return made

    return create_pipeline


def _with_trigger(moto):
    """GetPipelineExecution and ListPipelineExecutions name what started each execution (moto
    said StartPipelineExecution for all)."""
    def answer(self):
        result = moto(self)
        found = result.result
        name = self._get_param("pipelineName")
        pipeline = self.codepipeline_backend.get_pipeline(name)
        for entry in ([found["pipelineExecution"]] if "pipelineExecution" in found
                      else found["pipelineExecutionSummaries"]):
            record = pipeline.executions.get(entry["pipelineExecutionId"])
            if getattr(record, "trigger", None):
                entry["trigger"] = record.trigger
        return result

    return answer


# -- S3 sources that poll -------------------------------------------------------------------------


def _polled_sources(moto):
    def put_object(backend, bucket_name, key_name, value, *args, **kwargs):
        made = moto(backend, bucket_name, key_name, value, *args, **kwargs)
        if getattr(made, "version_id", None) not in (None, "null"):
            for pipelines, pipeline in _polling(backend.account_id, bucket_name, key_name):
                _start_after_poll(pipelines, pipeline)
        return made

    return put_object


def _polling(account: str, bucket: str, key: str):
    """(backend, pipeline) of every pipeline in the account whose S3 source action polls
    s3://bucket/key."""
    from moto.codepipeline.models import codepipeline_backends

    for pipelines in codepipeline_backends[account].values():
        for pipeline in list(pipelines.pipelines.values()):
            source = pipeline.pipeline["stages"][0]["actions"]
            for action in source:
                config = action.get("configuration") or {}
                kind = action.get("actionTypeId") or {}
                if (kind.get("provider") == "S3" and config.get("S3Bucket") == bucket
                        and config.get("S3ObjectKey") == key
                        and str(config.get("PollForSourceChanges", "true")).lower() != "false"):
                    yield pipelines, pipeline
                    break


def _start_after_poll(backend, pipeline) -> None:
    def later() -> None:
        moment = clock.after(POLL_SECONDS)
        while not clock.passed(moment):
            threading.Event().wait(engine.TICK)
        name = pipeline.pipeline["name"]
        if backend.pipelines.get(name) is pipeline:
            backend.start_pipeline_execution(name, None, trigger="PollForSourceChanges")

    threading.Thread(target=later, daemon=True).start()


# -- the operations moto does not answer ----------------------------------------------------------


def _pipeline(response, param: str = "pipelineName"):
    return response.codepipeline_backend.get_pipeline(response._get_param(param))


def _stage(pipeline, name: str) -> dict:
    for stage in pipeline.pipeline["stages"]:
        if stage["name"] == name:
            return stage
    raise StageNotFoundException(f"Stage {name} not found in pipeline "
                                 f"{pipeline.pipeline['name']}")


def get_pipeline_state(self):
    pipeline = _pipeline(self, "name")
    found = state(pipeline)
    stages = []
    with LOCK:
        for number, stage in enumerate(pipeline.pipeline["stages"]):
            stages.append(_stage_state(found, stage, first=number == 0))
    return ActionResult({"pipelineName": pipeline.pipeline["name"],
                         "pipelineVersion": pipeline.pipeline["version"],
                         "stageStates": stages, "created": pipeline.created,
                         "updated": pipeline.updated})


def _stage_state(found, stage: dict, first: bool) -> dict:
    name = stage["name"]
    answer: dict = {"stageName": name, "actionStates": []}
    if not first:
        transition = found.transitions.get(name, {"enabled": True})
        answer["inboundTransitionState"] = {
            "enabled": transition["enabled"],
            **({"lastChangedBy": transition["by"], "lastChangedAt": transition["at"]}
               if "at" in transition else {}),
            **({"disabledReason": transition["reason"]} if transition.get("reason") else {})}
    if name in found.waiting:
        answer["inboundExecution"] = {"pipelineExecutionId": found.waiting[name],
                                      "status": "InProgress"}
    if name in found.latest:
        execution, status = found.latest[name]
        answer["latestExecution"] = {"pipelineExecutionId": execution, "status": status}
    for action in stage["actions"]:
        entry: dict = {"actionName": action["name"]}
        run = found.actions.get((name, action["name"]))
        if run is not None:
            entry["latestExecution"] = _latest(run)
            if run.revision:
                entry["currentRevision"] = {"revisionId": run.revision}
        answer["actionStates"].append(entry)
    return answer


def _latest(run) -> dict:
    latest = {"actionExecutionId": run.id, "status": run.status,
              "lastStatusChange": run.updated}
    for key, value in (("summary", run.summary), ("externalExecutionId", run.external_id),
                       ("errorDetails", run.error), ("lastUpdatedBy", run.updated_by)):
        if value is not None:
            latest[key] = value
    if run.token and run.status == "InProgress":
        latest["token"] = run.token
    return latest


def put_approval_result(self):
    pipeline = _pipeline(self)
    stage = _stage(pipeline, self._get_param("stageName"))
    action_name = self._get_param("actionName")
    if not any(a["name"] == action_name for a in stage["actions"]):
        raise ActionNotFoundException(f"Action {action_name} not found in stage "
                                      f"{stage['name']}")
    result, token = self._get_param("result") or {}, self._get_param("token")
    if result.get("status") not in ("Approved", "Rejected"):
        raise ValidationException("result.status must be Approved or Rejected")
    with LOCK:
        run = state(pipeline).actions.get((stage["name"], action_name))
        if run is None or run.token != token:
            raise InvalidApprovalTokenException(f"The token {token} is not valid for the action")
        if run.status != "InProgress":
            raise ApprovalAlreadyCompletedException("The approval request has already been "
                                                    "completed")
        run.updated_by = _caller_arn(self)
        if result["status"] == "Approved":
            run.end("Succeeded", summary=result.get("summary"))
        else:
            run.end("Failed", summary=result.get("summary"),
                    error=f"Rejected: {result.get('summary') or ''}".strip())
    return ActionResult({"approvedAt": run.updated})


def _caller_arn(response) -> str:
    """The ARN of who signed the request being answered ("" outside a request)."""
    from flask import has_request_context, request

    from sandbox.aws.iam import identities, sigv4

    if not has_request_context():
        return ""
    header = request.headers.get("Authorization") or ""
    try:
        access_key = sigv4.parse_authorization(header).access_key
    except sigv4.Malformed:
        return ""
    from moto.iam.models import get_account_id_from

    found = identities.find_key(get_account_id_from(access_key), access_key,
                                request.headers.get("X-Amz-Security-Token"))
    return found.arn if found is not None else ""


def disable_stage_transition(self):
    return _transition(self, enabled=False)


def enable_stage_transition(self):
    return _transition(self, enabled=True)


def _transition(response, enabled: bool):
    pipeline = _pipeline(response)
    stage = _stage(pipeline, response._get_param("stageName"))
    kind = response._get_param("transitionType")
    if kind not in ("Inbound", "Outbound"):
        raise ValidationException("transitionType must be Inbound or Outbound")
    names = [s["name"] for s in pipeline.pipeline["stages"]]
    target = stage["name"]
    if kind == "Outbound":  # the next stage's inbound transition
        index = names.index(target)
        if index + 1 >= len(names):
            raise ValidationException(f"Stage {target} has no outbound transition")
        target = names[index + 1]
    elif names.index(target) == 0:
        raise ValidationException(f"Stage {target} has no inbound transition")
    set_transition(pipeline, target, enabled, response._get_param("reason"),
                   _caller_arn(response))
    return EmptyResult()


def list_action_executions(self):
    pipeline = _pipeline(self)
    wanted = (self._get_param("filter") or {}).get("pipelineExecutionId")
    if wanted and wanted not in pipeline.executions:
        from moto.codepipeline.exceptions import PipelineExecutionNotFoundException

        raise PipelineExecutionNotFoundException(f"Execution {wanted} not found")
    with LOCK:
        runs = [r for r in reversed(state(pipeline).runs)
                if wanted in (None, r.execution_id)]
        details = [_detail(pipeline, r) for r in runs]
    limit = self._get_param("maxResults")
    return ActionResult({"actionExecutionDetails": details[:limit] if limit else details})


def _detail(pipeline, run) -> dict:
    action = run.action
    region = pipeline.arn.split(":")[3]
    detail = {
        "pipelineExecutionId": run.execution_id, "actionExecutionId": run.id,
        "pipelineVersion": run.pipeline_version, "stageName": run.stage,
        "actionName": action["name"], "startTime": run.started, "lastUpdateTime": run.updated,
        "status": run.status,
        "input": {"actionTypeId": action["actionTypeId"],
                  "configuration": action.get("configuration") or {},
                  "resolvedConfiguration": run.resolved,
                  "roleArn": action.get("roleArn") or pipeline.pipeline["roleArn"],
                  "region": action.get("region") or region,
                  "inputArtifacts": [_artifact(a) for a in run.inputs]},
        "output": {"outputArtifacts": [_artifact(a) for a in run.outputs],
                   "executionResult": {}, "outputVariables": run.variables}}
    if run.updated_by:
        detail["updatedBy"] = run.updated_by
    result = detail["output"]["executionResult"]
    for key, value in (("externalExecutionId", run.external_id),
                       ("externalExecutionSummary", run.summary),
                       ("errorDetails", run.error)):
        if value is not None:
            result[key] = value
    return detail


def _artifact(found) -> dict:
    name, bucket, key = found
    return {"name": name, "s3location": {"bucket": bucket, "key": key}}


def stop_pipeline_execution(self):
    pipeline = _pipeline(self)
    execution_id = self._get_param("pipelineExecutionId")
    record = self.codepipeline_backend.get_pipeline_execution(pipeline.pipeline["name"],
                                                              execution_id)
    runner = getattr(record, "sandbox_run", None)
    if record.status != "InProgress" or runner is None:
        raise PipelineExecutionNotStoppableException(
            f"Unable to stop pipeline execution {execution_id}: it is {record.status}")
    runner.stop_mode = "abandon" if self._get_param("abandon") else "finish"
    with LOCK:
        record.status = "Stopping"
        if self._get_param("reason"):
            record.status_summary = self._get_param("reason")
    return ActionResult({"pipelineExecutionId": execution_id})
