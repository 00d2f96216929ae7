"""boto3 waiters with progress on stderr, returning the response that ended the wait.

The waiter polls as botocore defines it; an `after-call` hook on the client sees each poll's
response, which drives the progress display (rich on a terminal, plain lines otherwise) and is
handed back, so the caller needs no extra Describe call to read the final state.
"""

from __future__ import annotations

import sys
import threading
import time

from botocore.exceptions import WaiterError
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from cloud.aws import Aws
from cloud.console import say
from cloud.errors import KilnError


class WaitError(KilnError):
    """A waiter gave up or reached a failure state; the message says which resource and why."""


# The operation each waiter polls, and how to read a state out of its response.
OPERATIONS = {
    "instance_running": ("DescribeInstances", "instances"),
    "instance_stopped": ("DescribeInstances", "instances"),
    "instance_terminated": ("DescribeInstances", "instances"),
    "image_available": ("DescribeImages", "images"),
}


def wait(aws: Aws, name: str, label: str, max_attempts: int | None = None,
         delay: int | None = None, region: str | None = None, who: str = "bake",
         **params) -> dict:
    """Run waiter `name` of EC2 (in `region`) with `params`; return the last response it saw."""
    client = aws.client("ec2", region)
    operation, kind = OPERATIONS[name]
    seen: dict = {}
    display = _Display(label, who)

    def observe(parsed=None, **_ignored):
        seen["response"] = parsed
        display.update(_state(kind, parsed))

    event = f"after-call.ec2.{operation}"
    client.meta.events.register(event, observe)
    delay = delay or aws.settings.aws.waiter_delay
    config = {k: v for k, v in (("MaxAttempts", max_attempts), ("Delay", delay)) if v}
    try:
        with display:
            client.get_waiter(name).wait(WaiterConfig=config, **params)
    except WaiterError as error:
        raise WaitError(f"waiting for {label}: {error}") from error
    finally:
        client.meta.events.unregister(event, observe)
    return seen.get("response") or {}


def _state(kind: str, parsed: dict | None) -> str:
    if not parsed:
        return "?"
    if "Error" in parsed:
        return parsed["Error"].get("Code", "error")
    if kind == "images":
        return ", ".join(i.get("State", "?") for i in parsed.get("Images", [])) or "not visible"
    states = [i["State"]["Name"] for r in parsed.get("Reservations", []) for i in r["Instances"]]
    return ", ".join(states) or "not visible"


class _Display:
    """A spinner with the elapsed time on a terminal; one line per change of state otherwise."""

    def __init__(self, label: str, who: str):
        self.label = label
        self.who = who
        self.last = None
        self.started = time.monotonic()
        self.progress = None
        # One live display at a time: waits in worker threads (copies) print lines instead.
        if sys.stderr.isatty() and threading.current_thread() is threading.main_thread():
            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                     TimeElapsedColumn(), console=Console(stderr=True),
                                     transient=True)

    def __enter__(self):
        if self.progress:
            self.progress.start()
            self.task = self.progress.add_task(f"waiting for {self.label}")
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.stop()
        elapsed = time.monotonic() - self.started
        outcome = "done" if exc[0] is None else "stopped"
        say(f"{self.who}: waited {elapsed:.1f}s for {self.label} ({outcome}; state {self.last})")

    def update(self, state: str) -> None:
        if self.progress:
            self.progress.update(self.task, description=f"waiting for {self.label}: {state}")
        elif state != self.last:
            say(f"{self.who}: waiting for {self.label}: {state}")
        self.last = state


def image_available(aws: Aws, image_id: str, visible_within: int = 120,
                    region: str | None = None, max_attempts: int = 240,
                    who: str = "bake") -> dict:
    """Wait for `available` (15 s polls, an hour by default: encrypted copies take long); an
    image not visible yet right after CreateImage or CopyImage is retried."""
    attempt = retry(retry=retry_if_exception(_not_visible_yet), reraise=True,
                    stop=stop_after_delay(visible_within), wait=wait_exponential(0.5, max=10))
    where = f" in {region}" if region and region != aws.region else ""
    label = f"image {image_id}{where} ({aws.account_name}) available"
    response = attempt(wait)(aws, "image_available", label, max_attempts=max_attempts,
                             region=region, who=who, ImageIds=[image_id])
    return response["Images"][0]


def _not_visible_yet(error: BaseException) -> bool:
    """EC2 is eventually consistent: DescribeImages may not know an image it has just created."""
    cause = getattr(error, "__cause__", None)
    response = getattr(cause, "last_response", None) or {}
    return response.get("Error", {}).get("Code") == "InvalidAMIID.NotFound"
