"""The demo app's whole release pipeline in a private sandbox, stage by stage: commit (package,
publish), image (a real bake with chef-solo, a copy to a second region, the promotion into
prod), acceptance and capacity (each against a transient environment of the candidate),
staging, approval (given by the bench at once) and production, to 100 %.

Each run's sandbox makes AWS's waits last as long as on AWS times its scale (sandbox/clock.py).
Run at two scales, a stage's wall time w = work + scale × waits gives both parts, so the bench
also prints each stage at AWS's own durations (work + waits): the critical path of a release
from commit to production, and what in it runs in parallel.

Run: .venv/bin/python bench/pipeline.py [--scales 0.05,0.1] [--version 1.0.0]
(needs chef-solo and fpm on PATH, as a bake does)
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
CHECK = ('curl -fsS ${KILN_RESOLVE:+--resolve "$KILN_RESOLVE"} '
         '${KILN_CA_BUNDLE:+--cacert "$KILN_CA_BUNDLE"} -H "$KILN_HEADER" "${KILN_URL}health" '
         '| grep -F "$KILN_VERSION"')
STAGES = [
    {"name": "commit", "action": "commit", "commands": ["test -f manifests/hello-web.yaml"]},
    {"name": "image", "action": "image"},
    {"name": "acceptance", "action": "acceptance", "stack": "acceptance", "command": CHECK},
    {"name": "capacity", "action": "capacity", "stack": "acceptance", "users": 5,
     "duration": "10s", "thresholds": {"max_error_percent": 1}},
    {"name": "staging", "action": "deploy", "stack": "staging"},
    {"name": "approval", "action": "approval"},
    {"name": "production", "action": "production"},
]
# What runs side by side inside a stage (everything else, and the stages, one after another).
PARALLEL = {"image": "the copies to every copy region (one thread each); the promotion into "
                     "prod goes region by region"}


def run_pipeline(scale: float, version: str) -> dict:
    """One whole pipeline at `scale`: {stage: wall seconds}, and the bake's step timings."""
    from accounts import bootstrap
    from cloud import settings as settings_module
    from cloud.target import connect
    from orchestrator import pipeline, stack
    from sandbox.control import Sandbox
    from tests.conftest import deep_merge, project_config

    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as state:
        box = Sandbox(state, time_scale=scale)
        box.up()
        try:
            os.environ.update(box.env())
            raw = deep_merge(project_config(), {
                "sandbox": {"state_dir": state, "time_scale": scale},
                "dist": str(Path(state) / "dist"), "bake": {"copy_regions": [WEST]},
                "deploy": {"watch": "0", "steps": "100", "health_timeout": "10m"},
                "apps": {"hello-web": {"stacks": ["acceptance", "staging"],
                                       "pipeline": {"stages": STAGES}}}})
            settings = settings_module.validate(raw, ["bench"])
            stack.register_clusters(settings)  # the acceptance and staging environments
            admin = connect(settings, admin=True)
            bootstrap.run(admin.settings, admin, yes=True)
            aws = connect(settings)
            release = pipeline.release_id(settings, version)
            for stage in STAGES:
                if stage["action"] == "approval":
                    pipeline.decide(aws, version, True, "bench")
                started = time.monotonic()
                pipeline.run(aws, version, stage["name"], stage["name"])
                seconds[stage["name"]] = time.monotonic() - started
            timings = pipeline.results(aws, "hello-web", release)["image"]["evidence"]["timings"]
        finally:
            box.down()
    return {"seconds": seconds, "bake": timings}


def split(low: tuple[float, float], high: tuple[float, float]) -> tuple[float, float]:
    """(work, waits at scale 1) from (scale, wall) at two scales: wall = work + scale × waits."""
    (s1, w1), (s2, w2) = low, high
    waits = max(0.0, (w2 - w1) / (s2 - s1))
    return max(0.0, w1 - s1 * waits), waits


def clock(total: float) -> str:
    minutes, rest = divmod(int(round(total)), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", default="0.05,0.1",
                        help="two time scales, above 1/60 (the network's fastest)")
    parser.add_argument("--version", default="1.0.0")
    args = parser.parse_args()
    scales = sorted(float(s) for s in args.scales.split(","))
    runs = {}
    for scale in scales:
        print(f"== pipeline at time scale {scale}", file=sys.stderr, flush=True)
        runs[scale] = run_pipeline(scale, args.version)
    low, high = scales[0], scales[-1]
    print(f"hello-web {args.version}: the pipeline's stages, one after another")
    print(f"{'stage':<12} " + " ".join(f"{'at ' + str(s):>9}" for s in scales)
          + f" {'work':>8} {'AWS waits':>10} {'on AWS':>8}")
    total = 0.0
    for stage in STAGES:
        name = stage["name"]
        walls = [runs[s]["seconds"][name] for s in scales]
        work, waits = split((low, walls[0]), (high, walls[-1]))
        if stage["action"] == "approval":
            waits = 0.0  # a person's time, not the pipeline's
        total += work + waits
        print(f"{name:<12} " + " ".join(f"{w:>8.1f}s" for w in walls)
              + f" {work:>7.1f}s {clock(waits):>10} {clock(work + waits):>8}")
    print(f"{'total':<12} " + " ".join(f"{sum(runs[s]['seconds'].values()):>8.1f}s"
                                       for s in scales)
          + f" {'':>8} {'':>10} {clock(total):>8}")
    print("critical path: " + " → ".join(s["name"] for s in STAGES)
          + " (each stage waits for the one before it; approval is a person's time)")
    for stage, what in PARALLEL.items():
        print(f"in parallel, in stage {stage}: {what}")
    print("the bake's steps at each scale (seconds):")
    for step in runs[low]["bake"]:
        walls = [runs[s]["bake"].get(step, 0.0) for s in scales]
        work, waits = split((low, walls[0]), (high, walls[-1]))
        print(f"  {step:<16} " + " ".join(f"{w:>8.1f}" for w in walls)
              + f"   on AWS {clock(work + waits)}")


if __name__ == "__main__":
    import orchestrator.stack  # noqa: F401 - the env stacks in `invoke bootstrap`

    main()
