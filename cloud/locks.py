"""Leases in the bootstrap's DynamoDB lock table: one operation per key at a time.

An item per held lock: LockKey (the hash key), Owner (who, where, which run), Since, ExpiresAt
(epoch seconds) and Token. Taking a lock is a conditional put, releasing a conditional delete, so
two processes can never both believe they hold it.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from botocore.exceptions import ClientError
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from cloud.aws import Aws
from cloud.errors import KilnError


class LockHeld(KilnError):
    """Someone else holds the lease."""


@dataclass
class Lease:
    aws: Aws
    table: str
    key: str
    token: str
    ttl_seconds: int

    def renew(self) -> None:
        """Push the expiry forward; fails if the lease was taken over meanwhile."""
        try:
            self.aws.client("dynamodb").update_item(
                TableName=self.table, Key={"LockKey": {"S": self.key}},
                UpdateExpression="SET ExpiresAt = :e",
                ConditionExpression="#t = :t", ExpressionAttributeNames={"#t": "Token"},
                ExpressionAttributeValues={":e": {"N": str(_now() + self.ttl_seconds)},
                                           ":t": {"S": self.token}})
        except ClientError as error:
            if _conditional(error):
                raise LockHeld(f"lock {self.key} in table {self.table} was taken over") from None
            raise


def owner_description(run_id: str | None = None) -> str:
    who = f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}"
    return f"{who} run {run_id}" if run_id else who


@contextmanager
def lease(aws: Aws, table: str, key: str, owner: str, ttl_seconds: int = 900,
          wait_seconds: float = 0, take_expired: bool = False):
    """Hold the lock `key` for the duration of the block.

    Waits up to `wait_seconds` for a live lease to be released; an expired one is taken over only
    with `take_expired` (the operator's --force-unlock), otherwise the error says who holds it.
    """
    token = uuid.uuid4().hex
    _acquire_waiting(aws, table, key, owner, token, ttl_seconds, wait_seconds, take_expired)
    try:
        yield Lease(aws, table, key, token, ttl_seconds)
    finally:
        _release(aws, table, key, token)


def holder(aws: Aws, table: str, key: str) -> dict | None:
    item = aws.client("dynamodb").get_item(TableName=table, Key={"LockKey": {"S": key}},
                                           ConsistentRead=True).get("Item")
    if not item:
        return None
    return {"owner": item["Owner"]["S"], "since": item["Since"]["S"],
            "expires_at": int(item["ExpiresAt"]["N"])}


def _acquire_waiting(aws, table, key, owner, token, ttl, wait_seconds, take_expired) -> None:
    if wait_seconds <= 0:
        _acquire(aws, table, key, owner, token, ttl, take_expired)
        return
    retry(stop=stop_after_delay(wait_seconds), wait=wait_exponential(0.1, max=2),
          retry=retry_if_exception_type(LockHeld), reraise=True)(_acquire)(
        aws, table, key, owner, token, ttl, take_expired)


def _acquire(aws, table, key, owner, token, ttl, take_expired) -> None:
    condition = "attribute_not_exists(LockKey)"
    values = {}
    if take_expired:
        condition += " OR ExpiresAt < :now"
        values[":now"] = {"N": str(_now())}
    item = {"LockKey": {"S": key}, "Owner": {"S": owner}, "Token": {"S": token},
            "Since": {"S": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
            "ExpiresAt": {"N": str(_now() + ttl)}}
    params = {"TableName": table, "Item": item, "ConditionExpression": condition}
    if values:
        params["ExpressionAttributeValues"] = values
    try:
        aws.client("dynamodb").put_item(**params)
    except ClientError as error:
        if not _conditional(error):
            raise
        raise LockHeld(_held_message(aws, table, key)) from None


def _held_message(aws, table, key) -> str:
    current = holder(aws, table, key)
    if current is None:
        return f"lock {key} in table {table} was busy; try again"
    expired = current["expires_at"] < _now()
    state = "expired; take it over with --force-unlock" if expired else "lease still live"
    return (f"{key} is locked by {current['owner']} since {current['since']} "
            f"({state}; table {table})")


def _release(aws, table, key, token) -> None:
    try:
        aws.client("dynamodb").delete_item(
            TableName=table, Key={"LockKey": {"S": key}}, ConditionExpression="#t = :t",
            ExpressionAttributeNames={"#t": "Token"},
            ExpressionAttributeValues={":t": {"S": token}})
    except ClientError as error:
        if not _conditional(error):
            raise


def _conditional(error: ClientError) -> bool:
    return error.response["Error"]["Code"] == "ConditionalCheckFailedException"


def _now() -> int:
    return int(time.time())
