"""An app bake on its foundation image against the same app baked from the plain base image.

    .venv/bin/python bench/foundation.py [--rounds 2]

Starts a private sandbox (its own moto server and sshd under a temporary state directory),
bootstraps it and bakes foundation `runtime` once: the base image plus recipe[bench_runtime]
(bench/chef/cookbooks: a runtime the size of a JDK, unpacked and checksummed). Then, each round
with a new version of the example app, two bakes side by side, in alternating order:

- **plain**: from the plain base image, run list [recipe[bench_runtime], recipe[kiln_app]]: the
  runtime converged again, as every app bake without a foundation does;
- **on foundation**: `kiln.bake.foundation: runtime`, run list [recipe[kiln_app]].

Both run the same smoke checks (the app's /health and the runtime's launcher). The first bake of
a round packages and publishes the version; the second reuses the published RPM. Prints each
bake's wall time, its provision step and its image's root snapshot size, and the ratio.
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

from sandbox.control import Sandbox  # noqa: E402

INVOKE = str(Path(sys.executable).with_name("invoke"))
VENDOR = ROOT.parent / "shared" / "vendor"
for _tool in ("chef", "fpm"):
    if (VENDOR / _tool / "bin").is_dir():
        os.environ["PATH"] = f"{VENDOR / _tool / 'bin'}{os.pathsep}{os.environ['PATH']}"

COOKBOOKS = str(ROOT / "bench" / "chef" / "cookbooks")
RUNTIME_CHECK = "/opt/bench-runtime/bin-runtime | grep -F 'files'"
HEALTH = ("curl -fsS --max-time 5 http://127.0.0.1:{port}{health_path} | grep -F -- "
          "'\"version\": \"{version_release}\"'")
FOUNDATION = {"runtime": {"bake": {"run_list": ["recipe[bench_runtime]"],
                                   "cookbook_paths": [COOKBOOKS],
                                   "smoke_commands": [RUNTIME_CHECK]}}}
SIDES = {
    "plain": {"run_list": ["recipe[bench_runtime]", "recipe[kiln_app]"],
              "cookbook_paths": [COOKBOOKS], "smoke_commands": [HEALTH, RUNTIME_CHECK]},
    "on foundation": {"foundation": "runtime", "smoke_commands": [HEALTH, RUNTIME_CHECK]},
}


def invoke(runtime: Path, *args: str) -> tuple[float, dict]:
    started = time.monotonic()
    result = subprocess.run([INVOKE, "-f", str(runtime), *args], cwd=ROOT, text=True,
                            capture_output=True)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"invoke {' '.join(args)} failed:\n{result.stderr}")
    return elapsed, json.loads(result.stdout) if "--json" in args else {}


def snapshot_gib(box: Sandbox, image_id: str) -> int:
    import boto3

    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=box.endpoint,
                       **{k.lower(): v for k, v in box.credentials("admin").items()})
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    return sum(m["Ebs"].get("VolumeSize", 0) for m in image["BlockDeviceMappings"] if "Ebs" in m)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-foundation-") as temp:
        box = Sandbox(Path(temp) / "sandbox")
        box.up()
        try:
            run(box, Path(temp), args.rounds)
        finally:
            box.down()


def run(box: Sandbox, temp: Path, rounds: int) -> None:
    base = {"sandbox": {"state_dir": str(box.state_dir)}, "dist": str(temp / "dist"),
            "foundations": FOUNDATION}
    configs = {}
    for side, bake in SIDES.items():
        configs[side] = temp / f"{side.replace(' ', '-')}.yaml"
        configs[side].write_text(yaml.safe_dump({"kiln": {**base, "bake": bake}}))
    os.environ.update(box.env())
    elapsed, _ = invoke(configs["plain"], "bootstrap", "--yes")
    print(f"bootstrap: {elapsed:.1f} s")
    elapsed, record = invoke(configs["plain"], "bake", "--foundation", "runtime", "--version",
                             "1.0.0", "--json")
    print(f"foundation bake: {elapsed:.1f} s wall, provision "
          f"{record['timings'].get('provision', 0):.1f} s, image {record['image_id']}")
    totals = {side: [] for side in SIDES}
    print(f"\n{'round':<7}{'bake':<15}{'wall s':>8}{'provision s':>13}{'root GiB':>10}")
    for number in range(rounds):
        version = f"1.0.{number}"
        order = list(SIDES) if number % 2 == 0 else list(reversed(SIDES))
        for side in order:
            elapsed, record = invoke(configs[side], "bake", "--version", version, "--json")
            totals[side].append(elapsed)
            print(f"{number + 1:<7}{side:<15}{elapsed:>8.1f}"
                  f"{record['timings'].get('provision', 0):>13.1f}"
                  f"{snapshot_gib(box, record['image_id']):>10}")
    plain, on = (sum(totals[s]) / len(totals[s]) for s in SIDES)
    print(f"\nmean wall: plain {plain:.1f} s, on foundation {on:.1f} s: {plain / on:.2f}x faster")


if __name__ == "__main__":
    main()
