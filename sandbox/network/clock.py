"""AWS's clocks in the sandbox: periods, intervals and delays run SCALE times faster.

A 60 s CloudWatch period is one real second at the default scale of 60, a 30 s health-check
interval half a second, a 300 s deregistration delay five seconds. `KILN_SANDBOX_TIME_SCALE`
(in the moto server's environment) changes the scale.
"""

import os
import time

SCALE = max(1.0, float(os.environ.get("KILN_SANDBOX_TIME_SCALE", "60")))


def real(aws_seconds: float) -> float:
    """Real seconds standing for `aws_seconds` of AWS time."""
    return float(aws_seconds) / SCALE


def now() -> float:
    return time.time()
