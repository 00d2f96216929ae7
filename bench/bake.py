"""Time a full sandbox bake and show where the time and the AWS API calls go, step by step.

    .venv/bin/python bench/bake.py [--version 1.0.0] [--manifest manifests/hello-web.yaml]

Starts a private sandbox (its own moto server and sshd under a temporary state directory),
bootstraps it, then runs `invoke bake --json` twice: a fresh bake, and a second one with the same
inputs (which reuses the image). Prints each bake's wall time, its steps from the release
record's timings, and its API calls (the bake's own; packaging/publishing counted apart).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from provisioner.bake import STEPS  # noqa: E402
from sandbox.control import Sandbox  # noqa: E402

INVOKE = str(Path(sys.executable).with_name("invoke"))
# The real chef-solo beside this checkout, as `make` puts it on PATH.
VENDOR_CHEF = ROOT.parent / "shared/vendor/chef/bin"
if VENDOR_CHEF.is_dir():
    os.environ["PATH"] = f"{VENDOR_CHEF}{os.pathsep}{os.environ['PATH']}"


def invoke(runtime: Path, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    result = subprocess.run([INVOKE, "-f", str(runtime), *args], cwd=ROOT, text=True,
                            capture_output=True)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"invoke {' '.join(args)} failed:\n{result.stderr}")
    return elapsed, result


def report(title: str, elapsed: float, record: dict) -> None:
    print(f"\n{title}: {elapsed:.1f} s wall, image {record['image_id']}"
          f"{' (reused)' if record['reused'] else ''}")
    timings, calls = record["timings"], record["api_calls_by_step"]
    total = sum(timings.values()) or 1
    print(f"  {'step':<16}{'seconds':>9}{'share':>8}{'API calls':>11}")
    for step in sorted(timings, key=lambda s: STEPS.index(s) if s in STEPS else len(STEPS)):
        seconds = timings[step]
        print(f"  {step:<16}{seconds:>9.2f}{seconds / total:>8.0%}{calls.get(step, 0):>11}")
    print(f"  api_calls (the bake's own): {record['api_calls']}; "
          f"packaging/publishing: {record['api_calls_package']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--manifest", default=None)
    parser.add_argument("--share", default="prod")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-bake-") as temp:
        box = Sandbox(Path(temp) / "sandbox")
        box.up()
        try:
            runtime = Path(temp) / "bench.yaml"
            runtime.write_text(yaml.safe_dump({"kiln": {
                "sandbox": {"state_dir": str(box.state_dir)}, "dist": str(Path(temp) / "dist")}}))
            os.environ.update(box.env())
            elapsed, _ = invoke(runtime, "bootstrap", "--yes")
            print(f"bootstrap: {elapsed:.1f} s")
            bake = ["bake", "--version", args.version, "--json", "--share", args.share]
            if args.manifest:
                bake += ["--manifest", args.manifest]
            for title in ("fresh bake", "second bake, same inputs"):
                elapsed, result = invoke(runtime, *bake)
                report(title, elapsed, json.loads(result.stdout))
        finally:
            box.down()


if __name__ == "__main__":
    main()
