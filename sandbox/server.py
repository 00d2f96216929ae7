"""Entry point of the sandbox's moto server: apply the sandbox patches, then serve.

Run as `python -m sandbox.server --port N --state-dir DIR`; `sandbox.control` starts it.
"""

import argparse
import os
import sys
from pathlib import Path

from sandbox.patches import apply_all


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    # As on AWS: RunInstances refuses an AMI id that does not exist.
    os.environ.setdefault("MOTO_ENABLE_AMI_VALIDATION", "true")
    applied = apply_all(args.state_dir.resolve())
    print(f"sandbox patches: {', '.join(applied) or 'none'}", file=sys.stderr, flush=True)

    from moto.server import main as moto_main

    moto_main(["-H", args.host, "-p", str(args.port)])


if __name__ == "__main__":
    main()
