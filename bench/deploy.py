"""Time a deploy, canary, promote and rollback of the example app in a private sandbox and print
the AWS API calls each made (the figures `--json` reports as api_calls).

Run: .venv/bin/python bench/deploy.py [--capacity N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--capacity", type=int, default=4, help="baseline desired capacity")
    args = parser.parse_args()

    from accounts import bootstrap
    from cloud import settings as settings_module
    from cloud.target import connect
    from orchestrator import operations
    from sandbox.control import Sandbox
    from tests.conftest import deep_merge, project_config
    from tests.deploy_helpers import make_image

    with tempfile.TemporaryDirectory() as state:
        box = Sandbox(state)
        box.up()
        try:
            os.environ.update(box.env())
            raw = deep_merge(project_config(), {
                "sandbox": {"state_dir": state},
                "deploy": {"watch": "0", "capacity": {"desired": args.capacity,
                                                      "max": args.capacity}}})
            settings = settings_module.validate(raw, ["bench"])
            # `invoke bootstrap` runs as the administrator; the operations as the operator.
            admin = connect(settings, admin=True)
            bootstrap.run(settings, admin, settings.deploy.account, yes=True)
            aws = connect(settings)
            prod = aws.account(settings.deploy.account)
            make_image(prod, "1.0.0")
            make_image(prod, "1.1.0")
            rows = [("deploy (first)", operations.deploy(aws, version="1.0.0")),
                    ("canary 10%", operations.canary(aws, 10, version="1.1.0")),
                    ("promote 25,50,100", operations.promote(aws)),
                    ("rollback", operations.rollback(aws))]
        finally:
            box.down()
    print(f"baseline capacity {args.capacity}, watch 0")
    print(f"{'operation':<20} {'seconds':>8} {'api calls':>10}  top calls")
    for name, result in rows:
        top = sorted(result["api_calls_by_operation"].items(), key=lambda kv: -kv[1])[:3]
        print(f"{name:<20} {result['seconds']:>8.2f} {result['api_calls']:>10}  "
              + ", ".join(f"{op} {n}" for op, n in top))


if __name__ == "__main__":
    import orchestrator.stack  # noqa: F401 - the env stack in `invoke bootstrap`

    main()
