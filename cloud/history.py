"""The release ledger: who did what to which app, when, from and to which version, why, and how it
ended; the pipeline's stage results and approvals too. In AWS, never in local files: the build
account's history table (the build stack's HistoryTableName output), one item per event.

Items are only ever added (the operator policy grants PutItem, GetItem and Query on the table,
neither UpdateItem nor DeleteItem): an operation writes a `started` event before it acts and its
outcome after, so one killed on the way shows as started with no end. The table outlives every
cluster, group and teardown (DeletionPolicy Retain).

Keys: `Subject` is `app/<app>` (everything that happened to the app) or `release/<app>/<id>`
(the stage results and approvals of one version-release, what pipeline gates read); `At` is the
UTC time to the microsecond, then the run id, so events sort by time and never collide.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from botocore.exceptions import ClientError

from cloud import stacks
from cloud.aws import Aws
from cloud.console import say
from cloud.errors import KilnError

OUTPUT = "HistoryTableName"
_SESSION_CHARS = re.compile(r"[^\w+=,.@-]")


def operator(arn: str) -> str:
    """The person or job behind a caller ARN: an IAM user's name, an assumed role's session
    name (SSO sessions are named after the person), else the last part of the ARN."""
    resource = arn.split(":", 5)[-1]
    parts = resource.split("/")
    if parts[0] == "assumed-role" and len(parts) >= 3:
        return parts[2]
    return parts[-1] or "unknown"


def session_name(arn: str) -> str:
    """A role session name (2-64 of [\\w+=,.@-]) after the operator, so the target account's
    CloudTrail tells operators apart: kiln-<operator>."""
    who = operator(arn)
    name = _SESSION_CHARS.sub("-", who if who.startswith("kiln-") else f"kiln-{who}")
    return name[:64]


def source_identity(arn: str) -> str:
    """The operator as sts:SourceIdentity (same characters; `aws:` is reserved)."""
    value = _SESSION_CHARS.sub("-", operator(arn))[:64]
    return value if len(value) >= 2 and not value.lower().startswith("aws:") else f"kiln-{value}"


def table(aws: Aws) -> str | None:
    """The history table's name; None before `invoke bootstrap` added it to the build stack."""
    try:
        return stacks.output(aws, "build", OUTPUT)
    except KilnError:
        return None


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(aws: Aws, subject: str, event: dict, required: bool = False) -> dict | None:
    """Add one event about `subject` (app/<app> or release/<app>/<id>) as the caller: `who` is
    its ARN. Without a history table: one line saying it was not recorded, unless `required`
    (a gate must not be passed unremembered), which refuses. None values are left out."""
    name = table(aws)
    if name is None:
        message = (f"no history table: stack {stacks.stack_name(aws.settings, 'build')} in "
                   f"account {aws.account_name} has no {OUTPUT} output (`invoke bootstrap` "
                   f"adds it)")
        if required:
            raise KilnError(message)
        say(f"history: not recorded ({message})")
        return None
    at = now()
    item = {"Subject": subject, "At": f"{at}#{event.get('run_id', '')}", "at": at,
            "who": aws.caller_arn, "operator": operator(aws.caller_arn),
            **{k: v for k, v in event.items() if v is not None}}
    try:
        aws.client("dynamodb").put_item(
            TableName=name, Item={k: _attribute(v) for k, v in item.items()},
            ConditionExpression="attribute_not_exists(#s)",
            ExpressionAttributeNames={"#s": "Subject"})
    except ClientError as error:
        raise KilnError(f"history table {name}: cannot record {event.get('event', 'an event')} "
                        f"for {subject}: {error}") from None
    return item


def read(aws: Aws, subject: str, newest_first: bool = True, limit: int | None = None) -> list:
    """The events of one subject, newest first unless told otherwise."""
    name = table(aws)
    if name is None:
        raise KilnError(f"no history table: stack {stacks.stack_name(aws.settings, 'build')} in "
                        f"account {aws.account_name} has no {OUTPUT} output (`invoke bootstrap` "
                        f"adds it)")
    query = {"TableName": name, "KeyConditionExpression": "#s = :s",
             "ExpressionAttributeNames": {"#s": "Subject"},
             "ExpressionAttributeValues": {":s": {"S": subject}},
             "ScanIndexForward": not newest_first}
    items = []
    for page in aws.client("dynamodb").get_paginator("query").paginate(**query):
        items += [_plain(item) for item in page["Items"]]
        if limit and len(items) >= limit:
            return items[:limit]
    return items


def _attribute(value) -> dict:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": str(value)}
    if isinstance(value, dict | list):
        return {"S": json.dumps(value, sort_keys=True, default=str)}
    return {"S": str(value)}


def _plain(item: dict) -> dict:
    found = {}
    for key, value in item.items():
        if "BOOL" in value:
            found[key] = value["BOOL"]
        elif "N" in value:
            number = float(value["N"])
            found[key] = int(number) if number.is_integer() else number
        else:
            text = value["S"]
            found[key] = json.loads(text) if key in ("detail", "evidence") else text
    return found


def settled(events: list[dict]) -> list[dict]:
    """One event per run: its outcome, or its start when no outcome was recorded (killed)."""
    ends = {e.get("run_id") for e in events if e.get("outcome") != "started" and e.get("run_id")}
    return [e for e in events if e.get("outcome") != "started" or e.get("run_id") not in ends]


def lines(events: list[dict]) -> list[str]:
    """A table for people, newest first: when, what, from → to, outcome, who, why."""
    rows = [("WHEN", "CLUSTER", "EVENT", "FROM", "TO", "OUTCOME", "WHO", "REASON")]
    for e in settled(events):
        outcome = e.get("outcome", "")
        if outcome == "started":
            outcome = "started, no outcome recorded"
        rows.append((e["at"][:19].replace("T", " "), e.get("cluster") or e.get("app", ""),
                     e.get("event", ""), e.get("from_release") or "-",
                     e.get("to_release") or "-", outcome, e.get("operator", ""),
                     e.get("reason") or ""))
    if len(rows) == 1:
        return ["no history yet"]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]
