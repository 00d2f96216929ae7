"""S3's events go to EventBridge's default bus, and a matching rule starts a pipeline.

On AWS a bucket whose notifications go to EventBridge (EventBridgeConfiguration) puts each of its
events (PutObject, CopyObject and CompleteMultipartUpload as "Object Created", and so on) on the
default event bus of its account and region; each enabled rule of that bus whose pattern matches
delivers it to its targets. A CodePipeline pipeline target starts an execution (trigger
CloudWatchEvent, the rule's ARN as its detail) as the target's RoleArn: EventBridge assumes it
(its trust policy must let events.amazonaws.com, for the rule's account and ARN), and it must
allow codepipeline:StartPipelineExecution on the pipeline; else the event is dropped.

moto sent S3's events to the rules of every bus, disabled ones too, with a detail of its own
(`eTag`, the reason `ObjectCreated`, a fixed requester), and its rules raised on a pipeline
target (the error swallowed, with the rest of the rules). Here the event is AWS's shape, the
rules those of the default bus, and a delivery is counted in the rule's AWS/Events metrics
(TriggeredRules, Invocations, FailedInvocations), as CloudWatch counts it; a failed one is also
said in the server's log (moto.log) with its reason (a refused right also in iam.log).
"""

from __future__ import annotations

import copy
import itertools
import sys
import uuid
from pathlib import Path

from sandbox.aws import seams

NAMESPACE = "AWS/Events"
SESSION = "events"  # the role session EventBridge starts the pipeline in
# S3's event name -> the reason AWS's "Object Created" detail gives.
REASONS = {"s3:ObjectCreated:Put": "PutObject", "s3:ObjectCreated:Post": "POST Object",
           "s3:ObjectCreated:Copy": "CopyObject",
           "s3:ObjectCreated:CompleteMultipartUpload": "CompleteMultipartUpload",
           "s3:ObjectRemoved:Delete": "DeleteObject",
           "s3:ObjectRemoved:DeleteMarkerCreated": "DeleteObject"}
_SEQUENCE = itertools.count(1)


class Undelivered(Exception):
    """A target could not be given the event: why, as the sandbox's log says it."""


def apply(state_dir: Path) -> None:
    from moto.events.models import Rule
    from moto.s3 import notifications

    seams.replace(notifications, "_send_event_bridge_message", to_default_bus,
                  signature="(account_id: str, bucket: 'FakeBucket', event_name: str, key: Any) "
                            "-> None", owner=__name__)
    seams.wrap(Rule, "send_to_targets", _delivering,
               signature="(self, original_event: 'EventMessageType', transform_input: 'bool' = "
                         "True) -> 'None'", owner=__name__)


def to_default_bus(account_id: str, bucket, event_name: str, key) -> None:
    """The bucket's event on its account and region's default bus. The put it follows succeeds
    whatever becomes of the event, as on AWS (S3 sends it afterwards)."""
    from moto.events.models import events_backends

    try:
        event = s3_event(account_id, bucket, getattr(event_name, "value", event_name), key)
        bus = events_backends[account_id][bucket.region_name].event_buses.get("default")
        for rule in list(bus.rules.values()) if bus is not None else []:
            rule.send_to_targets(event, transform_input=False)
    except Exception as error:  # noqa: BLE001 - said in the log, the put unaffected
        print(f"sandbox: events: s3://{bucket.name}/{key.name}: {event_name} not sent: "
              f"{error!r}", file=sys.stderr, flush=True)


def s3_event(account_id: str, bucket, event_name: str, key) -> dict:
    """As S3 sends it to EventBridge (the S3 user guide's "EventBridge event message
    structure")."""
    from moto.core.utils import unix_time
    from moto.s3.notifications import _detail_type

    obj = {"key": key.name, "size": key.size, "etag": key.etag.replace('"', ""),
           "sequencer": f"{next(_SEQUENCE):016X}"}
    if key.version_id not in (None, "null"):
        obj["version-id"] = key.version_id
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": _detail_type(event_name),
            "source": "aws.s3", "account": account_id, "time": unix_time(),
            "region": bucket.region_name, "resources": [bucket.arn],
            "detail": {"version": "0", "bucket": {"name": bucket.name}, "object": obj,
                       "request-id": uuid.uuid4().hex[:16].upper(), "requester": account_id,
                       "source-ip-address": _source_ip(),
                       "reason": REASONS.get(event_name, event_name.split(":")[1])}}


def _source_ip() -> str:
    from flask import has_request_context, request

    return (request.remote_addr or "127.0.0.1") if has_request_context() else "127.0.0.1"


def _delivering(moto):
    """A rule delivers only when enabled; a pipeline target is started here, each other target
    by moto; each delivery is counted, a failed one said in the log."""
    def send_to_targets(rule, original_event, transform_input=True):
        if rule.state != "ENABLED" or not rule.event_pattern.matches_event(original_event):
            return
        _count(rule, "TriggeredRules")
        for target in list(rule.targets):
            _count(rule, "Invocations")
            try:
                if _is_pipeline(target["Arn"]):
                    start_pipeline(rule, target)
                else:
                    alone = copy.copy(rule)
                    alone.targets = [target]
                    moto(alone, original_event, transform_input)
            except Exception as error:  # noqa: BLE001 - EventBridge drops it, as on AWS
                _count(rule, "FailedInvocations")
                print(f"sandbox: events: rule {rule.arn} did not deliver to {target['Arn']}: "
                      f"{error}", file=sys.stderr, flush=True)

    return send_to_targets


def _is_pipeline(arn: str) -> bool:
    parts = arn.split(":")
    return len(parts) == 6 and parts[2] == "codepipeline"


def start_pipeline(rule, target: dict) -> str:
    """StartPipelineExecution as the target's role; the execution's id."""
    from moto.codepipeline.models import codepipeline_backends

    from sandbox.aws.codepipeline import service_role

    arn, role = target["Arn"], target.get("RoleArn")
    region, account, name = arn.split(":")[3:6]
    if account != rule.account_id or region != rule.region_name:
        raise Undelivered("a pipeline target must be in the rule's account and region")
    if not role:
        raise Undelivered("a pipeline target needs a RoleArn")
    if not service_role.trusts(role, "events.amazonaws.com", source=rule.arn):
        raise Undelivered(f"events.amazonaws.com may not assume {role}")
    try:
        service_role.check(role, SESSION, "codepipeline:StartPipelineExecution", arn, region)
    except service_role.Refused as refused:
        raise Undelivered(str(refused)) from None
    pipelines = codepipeline_backends[account][region]
    if name not in pipelines.pipelines:
        raise Undelivered(f"the pipeline {name} does not exist")
    return pipelines.start_pipeline_execution(name, None, trigger="CloudWatchEvent",
                                              detail=rule.arn)


def _count(rule, metric: str) -> None:
    from moto.cloudwatch.models import cloudwatch_backends

    cloudwatch_backends[rule.account_id][rule.region_name].put_metric_data(NAMESPACE, [{
        "MetricName": metric, "Value": 1.0, "Unit": "Count",
        "Dimensions": [{"Name": "RuleName", "Value": rule.name}]}])
