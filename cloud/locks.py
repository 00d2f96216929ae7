"""Leases in the bootstrap's DynamoDB lock table: one operation per key at a time.

An item per held lock: LockKey (the hash key), Owner (who, where, which run), Since, ExpiresAt
(epoch seconds), Token, and the holder's process: Host (host name, boot and PID namespace), Pid
and PidStart (its start time, so a reused pid is not mistaken for the holder). Taking a lock is a
conditional put, releasing a conditional delete, so two processes can never both believe they
hold it.

Leases are short and kept alive by a heartbeat thread while the holder lives: a lease that has
expired belongs to a holder that is gone (killed, host lost) and is taken over by the next
taker. On the same host the next taker does not even wait for the expiry: a holder whose
process no longer exists is known dead at once.
"""

from __future__ import annotations

import getpass
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from cloud import stacks
from cloud.aws import Aws
from cloud.errors import KilnError, Refused

# A live holder renews its lease every third of it: two renewals may fail before it lapses.
DEFAULT_TTL = 60
RENEWALS_PER_LEASE = 3


class LockHeld(Refused):
    """Someone else holds the lease."""


@dataclass
class Lease:
    db: object  # the DynamoDB client of the table's account and region
    table: str
    key: str
    token: str
    ttl_seconds: int
    lost: str | None = None  # why the lease is no longer ours, set by the heartbeat
    _stop: threading.Event = field(default_factory=threading.Event)
    _renewing: threading.Lock = field(default_factory=threading.Lock)

    @property
    def interval(self) -> float:
        """Seconds between the heartbeat's renewals."""
        return max(self.ttl_seconds / RENEWALS_PER_LEASE, 0.2)

    def renew(self) -> None:
        """Push the expiry forward; fails if the lease was taken over meanwhile."""
        if self.lost:
            raise LockHeld(self.lost)
        with self._renewing:
            try:
                self.db.update_item(
                    TableName=self.table, Key={"LockKey": {"S": self.key}},
                    UpdateExpression="SET ExpiresAt = :e",
                    ConditionExpression="#t = :t", ExpressionAttributeNames={"#t": "Token"},
                    ExpressionAttributeValues={":e": {"N": str(_now() + self.ttl_seconds)},
                                               ":t": {"S": self.token}})
            except ClientError as error:
                if _conditional(error):
                    self.lost = f"lock {self.key} in table {self.table} was taken over"
                    raise LockHeld(self.lost) from None
                raise

    def heartbeat(self) -> None:
        """Renew every `interval` until stopped or lost; a failed call is tried next beat."""
        while not self._stop.wait(self.interval):
            try:
                self.renew()
            except LockHeld:
                return
            except (ClientError, BotoCoreError):
                continue


def owner_description(run_id: str | None = None) -> str:
    who = f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}"
    return f"{who} run {run_id}" if run_id else who


@contextmanager
def lease(aws: Aws, table: str, key: str, owner: str, ttl_seconds: int = DEFAULT_TTL,
          wait_seconds: float = 0, force: bool = False, force_option: str | None = None,
          on_wait: Callable[[str], None] | None = None, region: str | None = None):
    """Hold the lock `key` for the duration of the block, renewed by a heartbeat thread.

    Takes over a lease that has expired or whose holder's process is gone from this host. Waits
    up to `wait_seconds` for a live one to be released (telling `on_wait` who holds it first);
    `force` (the operator's `force_option`, for a holder known dead on another host) takes over
    even a live one. The table is in `region` (default: the session's).
    """
    db = aws.client("dynamodb", region)  # made here: the heartbeat thread only uses it
    token = uuid.uuid4().hex
    attempt = (db, table, key, owner, token, ttl_seconds, force, force_option)
    try:
        _acquire(*attempt)
    except LockHeld as error:
        if wait_seconds <= 0:
            raise
        if on_wait:
            on_wait(str(error))
        retry(stop=stop_after_delay(wait_seconds), wait=wait_exponential(0.1, max=2),
              retry=retry_if_exception_type(LockHeld), reraise=True)(_acquire)(*attempt)
    held = Lease(db, table, key, token, ttl_seconds)
    beat = threading.Thread(target=held.heartbeat, name=f"lease {key}", daemon=True)
    beat.start()
    try:
        yield held
    finally:
        held._stop.set()
        beat.join()
        _release(db, table, key, token)


def holder(aws: Aws, table: str, key: str, region: str | None = None) -> dict | None:
    return _holder(aws.client("dynamodb", region), table, key)


def _holder(db, table: str, key: str) -> dict | None:
    item = db.get_item(TableName=table, Key={"LockKey": {"S": key}},
                       ConsistentRead=True).get("Item")
    if not item:
        return None
    return {"owner": item["Owner"]["S"], "since": item["Since"]["S"],
            "expires_at": int(item["ExpiresAt"]["N"]), "token": item["Token"]["S"],
            "host": item.get("Host", {}).get("S"), "pid": int(item.get("Pid", {}).get("N", 0)),
            "pid_start": item.get("PidStart", {}).get("S")}


def bake_key(app: str, version: str) -> str:
    """The lock a bake of `app` `version` holds while it runs (its owner names the run id)."""
    return f"bake/{app}/{version}"


def alive(current: dict | None) -> bool:
    """True while a lease's holder runs: its lease is renewed, and it is not seen gone here."""
    return bool(current) and current["expires_at"] >= _now() and not holder_gone(current)


def build_table(aws: Aws) -> str | None:
    """The build account's lock table: kiln.repo.lock_table, else the build stack's
    LockTableName output; None before `invoke bootstrap` made it."""
    if aws.settings.repo.lock_table:
        return aws.settings.repo.lock_table
    try:
        return stacks.output(aws, "build", "LockTableName")
    except KilnError:
        return None


def holder_gone(current: dict) -> bool:
    """True when the lease's holder ran on this host and its process no longer exists."""
    if not current.get("pid") or current.get("host") != host_identity():
        return False
    return process_start(current["pid"]) != current.get("pid_start")


def host_identity() -> str:
    """This host as a process sees it: name, boot and PID namespace (pids mean something only
    within the same three)."""
    boot = _read("/proc/sys/kernel/random/boot_id").strip()
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}/{boot}/{namespace}"


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None if there is no such process."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    state, start = fields[0], fields[19]
    return None if state in ("Z", "X") else start


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _acquire(db, table, key, owner, token, ttl, force, force_option) -> None:
    if _put(db, table, _item(key, owner, token, ttl),
            "attribute_not_exists(LockKey) OR ExpiresAt < :now", {":now": {"N": str(_now())}}):
        return
    current = _holder(db, table, key)
    if current is None:
        raise LockHeld(f"lock {key} in table {table} was busy; try again")
    taken = (force or holder_gone(current)) and _put(
        db, table, _item(key, owner, token, ttl), "#t = :old",
        {":old": {"S": current["token"]}}, {"#t": "Token"})
    if taken:
        return
    raise LockHeld(_held_message(table, key, current, force_option))


def _item(key: str, owner: str, token: str, ttl: int) -> dict:
    return {"LockKey": {"S": key}, "Owner": {"S": owner}, "Token": {"S": token},
            "Since": {"S": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
            "ExpiresAt": {"N": str(_now() + ttl)}, "Host": {"S": host_identity()},
            "Pid": {"N": str(os.getpid())}, "PidStart": {"S": process_start(os.getpid()) or ""}}


def _put(db, table, item, condition, values, names=None) -> bool:
    """A conditional put: True if it was made, False if the condition failed."""
    params = {"TableName": table, "Item": item, "ConditionExpression": condition,
              "ExpressionAttributeValues": values}
    if names:
        params["ExpressionAttributeNames"] = names
    try:
        db.put_item(**params)
    except ClientError as error:
        if not _conditional(error):
            raise
        return False
    return True


def _held_message(table: str, key: str, current: dict, force_option: str | None) -> str:
    left = max(current["expires_at"] - _now(), 0)
    state = f"lease live, renewed by its holder; {left} s left once that stops"
    if force_option:
        state += f"; if that holder is gone for good, {force_option} takes it over"
    return (f"{key} is locked by {current['owner']} since {current['since']} "
            f"({state}; table {table})")


def _release(db, table, key, token) -> None:
    try:
        db.delete_item(
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
