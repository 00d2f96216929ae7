"""The sandbox's one clock: how fast AWS's durations pass here.

The time scale (`kiln.sandbox.time_scale`, kept in the state dir's `time-scale` file and read on
every question so a run can change it; 1 is real time) multiplies every AWS duration the sandbox
models: the pending states of images, instances and groups (sandbox/aws/timing.py), and the
periods, intervals and delays of alarms, health checks and draining (sandbox/network/). The
network side never runs more than FASTEST times faster than AWS: metrics, health checks and alarm
periods need real time to happen in (at the default scale a 60 s CloudWatch period is one real
second, a 30 s health-check interval half a second, a 300 s deregistration delay five seconds).
"""

from __future__ import annotations

import time
from pathlib import Path

DEFAULT_SCALE = 0.002  # the copy of an image takes 1.2 s, a new image 0.6 s
FASTEST = 60.0

_STATE_DIR: Path | None = None


def use(state_dir: Path) -> None:
    """Read the scale from this state dir from now on (the server calls it at start)."""
    global _STATE_DIR
    _STATE_DIR = state_dir


def scale() -> float:
    """The time scale now: the state dir's `time-scale` file, else the default."""
    return scale_of(_STATE_DIR)


def scale_of(state_dir: Path | None) -> float:
    try:
        return float((state_dir / "time-scale").read_text().strip())
    except (OSError, ValueError, TypeError):
        return DEFAULT_SCALE


def after(seconds: float) -> tuple[float, float]:
    """A moment `seconds` of AWS time from now; scaled when it is asked about, not now."""
    return (time.time(), seconds)


def passed(moment: tuple[float, float] | None) -> bool:
    if moment is None:
        return True
    start, seconds = moment
    return time.time() >= start + seconds * scale()


def settled(obj, attribute: str) -> bool:
    """Whether the moment in `obj.attribute` has passed; once it has, it stays passed (a later,
    slower time scale does not take back what was seen)."""
    if passed(obj.__dict__.get(attribute)):
        obj.__dict__[attribute] = None
        return True
    return False


def real(aws_seconds: float) -> float:
    """Real seconds standing for `aws_seconds` of AWS time, on the network's side."""
    return float(aws_seconds) * max(scale(), 1 / FASTEST)


def now() -> float:
    return time.time()
