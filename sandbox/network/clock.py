"""AWS's clocks in the sandbox: periods, intervals and delays follow the sandbox's time scale.

The scale is the one the moto server's pending states use (`kiln.sandbox.time_scale`, the state
dir's `time-scale` file, sandbox/patches/timing.py), so a run at realistic durations slows
alarms, health checks and draining as well. The proxies never run more than FASTEST times faster
than AWS: metrics, health checks and alarm periods need real time to happen in (at the default
scale a 60 s CloudWatch period is one real second, a 30 s health-check interval half a second, a
300 s deregistration delay five seconds).
"""

import time

from sandbox.patches import timing

FASTEST = 60.0


def real(aws_seconds: float) -> float:
    """Real seconds standing for `aws_seconds` of AWS time."""
    return float(aws_seconds) * max(timing.scale(), 1 / FASTEST)


def now() -> float:
    return time.time()
