"""Human progress goes to stderr, machine-readable results to stdout."""

import json
import sys
from typing import Any


def say(message: str) -> None:
    """Print one line of progress for a human, on stderr."""
    print(message, file=sys.stderr, flush=True)


def emit_json(result: Any) -> None:
    """Print a result for machines on stdout, and nothing else there."""
    json.dump(result, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()
