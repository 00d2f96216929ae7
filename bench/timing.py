"""Kiln's waits at AWS's own durations, scaled down: copies, a promotion and deploys in a private
sandbox whose pending states last as on AWS times `--scale` (sandbox/aws/timing.py).

What it shows, on stderr as it goes: each image wait's progress lines (not found right after
CopyImage, retried; `pending`; `available`), the health wait of new server groups (targets
`initial` until their checks pass), and a health timeout rolling a deploy back. At the default
scale 0.02 a copy takes 12 s (10 min on AWS), a target's first checks 3 s (2.5 min).

Run: .venv/bin/python bench/timing.py [--scale 0.02]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WEST = "us-west-2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=0.02, help="AWS durations times this")
    args = parser.parse_args()

    from accounts import bootstrap
    from cloud import settings as settings_module
    from cloud import stacks
    from cloud import tags as kiln_tags
    from cloud.target import connect
    from orchestrator import operations
    from provisioner import promote, share
    from sandbox.control import Sandbox
    from tests.conftest import deep_merge, project_config
    from tests.image_helpers import make_image

    rows = []

    def timed(name, action):
        started = time.monotonic()
        try:
            outcome = action()
        except Exception as error:  # noqa: BLE001 - the bench reports what each step ended in
            outcome = f"{type(error).__name__}: {str(error).splitlines()[0][:90]}"
        rows.append((name, time.monotonic() - started, outcome))
        print(f"== {name}: {rows[-1][1]:.1f}s, {outcome}", file=sys.stderr, flush=True)
        return outcome

    with tempfile.TemporaryDirectory() as state:
        box = Sandbox(state, time_scale=args.scale)
        box.up()
        try:
            os.environ.update(box.env())
            raw = deep_merge(project_config(), {
                "sandbox": {"state_dir": state, "time_scale": args.scale},
                "dist": str(Path(state) / "dist"),
                "bake": {"copy_regions": [WEST]},
                "deploy": {"watch": "0", "steps": "100", "health_timeout": "5m"}})
            settings = settings_module.validate(raw, ["bench"])
            aws = connect(settings)
            bootstrap.run(settings, aws, yes=True)
            ec2 = aws.client("ec2")
            image_id = timed("create image (waits for available)",
                             lambda: make_image(ec2, stacks.ami_key(aws), version="1.0.0"))
            tags = kiln_tags.from_list(ec2.describe_images(ImageIds=[image_id])["Images"][0]
                                       ["Tags"])
            timed(f"copy to {WEST}",
                  lambda: share.copy_to_regions(aws, image_id, [WEST], tags)[WEST])
            timed("promote to prod (2 regions)",
                  lambda: len(promote.promote(aws, "hello-web", "1.0.0", "prod")["promotions"]))
            timed("deploy 1.0.0 (health wait)",
                  lambda: operations.deploy(aws, version="1.0.0")["result"])
            second = make_image(ec2, stacks.ami_key(aws), version="1.1.0")
            share.copy_to_regions(aws, second, [WEST], {**tags, kiln_tags.VERSION: "1.1.0"})
            promote.promote(aws, "hello-web", "1.1.0", "prod")
            short = connect(settings_module.validate(
                deep_merge(raw, {"deploy": {"health_timeout": "1s"}}), ["bench"]))
            timed("deploy 1.1.0, health timeout 1s", lambda: operations.deploy(
                short, version="1.1.0")["result"])
        finally:
            box.down()
    print(f"time scale {args.scale} (1 = AWS's own durations)")
    print(f"{'step':<36} {'seconds':>8}  outcome")
    for name, seconds, outcome in rows:
        print(f"{name:<36} {seconds:>8.1f}  {outcome}")


if __name__ == "__main__":
    import orchestrator.stack  # noqa: F401 - the env stack in `invoke bootstrap`

    main()
