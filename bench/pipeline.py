"""Two apps' whole release pipelines in a private sandbox, stage by stage: the demo app
(hello-web, whose acceptance is a curl of its health and whose capacity stage uses Kiln's
default locustfile) and the worked example of a team's own app (docs/examples/guestbook: its own
unit tests in the commit stage, a pytest acceptance suite writing JUnit XML, a locustfile and
thresholds), each through commit (tests, package, publish), image (a real bake with chef-solo,
a copy to a second region, the promotion into prod), acceptance and capacity (each against a
transient environment of the candidate), staging, approval (given by the bench at once) and
production, to 100 %.

Each run's sandbox makes AWS's waits last as long as on AWS times its scale (sandbox/clock.py).
Run at two scales, a stage's wall time w = work + scale × waits gives both parts, so the bench
also prints each stage at AWS's own durations (work + waits): the critical path of a release
from commit to production, and what in it runs in parallel. The stages that start instances run
at larger scales (--instance-scales) than the others: there a machine's real boot overlaps the
modelled pending and health-check waits, and only waits longer than the boot show in the wall
time.

Run: .venv/bin/python bench/pipeline.py [--scales 0.05,0.1] [--instance-scales 0.2,0.4]
     [--apps hello-web,guestbook] [--version 1.0.0]
(needs chef-solo and fpm on PATH, as a bake does)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WEST = "us-west-2"
EXAMPLE = ROOT / "docs" / "examples" / "guestbook" / "kiln.yaml"
CHECK = ('curl -fsS ${KILN_RESOLVE:+--resolve "$KILN_RESOLVE"} '
         '${KILN_CA_BUNDLE:+--cacert "$KILN_CA_BUNDLE"} -H "$KILN_HEADER" "${KILN_URL}health" '
         '| grep -F "$KILN_VERSION"')
DEMO = [
    {"name": "commit", "action": "commit", "commands": ["test -f manifests/hello-web.yaml"]},
    {"name": "image", "action": "image"},
    {"name": "acceptance", "action": "acceptance", "stack": "acceptance", "command": CHECK},
    {"name": "capacity", "action": "capacity", "stack": "acceptance", "users": 5,
     "duration": "10s", "thresholds": {"max_error_percent": 1}},
    {"name": "staging", "action": "deploy", "stack": "staging"},
    {"name": "approval", "action": "approval"},
    {"name": "production", "action": "production"},
]
# The actions that start instances, run at the instance scales.
INSTANCES = ("acceptance", "capacity", "exploratory", "deploy", "production")
# The stages, and the bake's steps, that wait for nothing the sandbox models: all work.
WORK = ("commit", "approval")
WORK_STEPS = ("base-ami", "package", "reuse", "share", "key-pair", "security-group", "ssh",
              "provision", "stop")
# What runs side by side inside a stage (everything else, and the stages, one after another).
PARALLEL = {"image": "the copies to every copy region (one thread each), then the promotion "
                     "into prod in every region at once (one thread each)"}


def example_apps() -> dict:
    """kiln.apps of the worked example (docs/examples/guestbook/kiln.yaml)."""
    return yaml.safe_load(EXAMPLE.read_text())["kiln"]["apps"]


def app_entries(names: list[str]) -> dict:
    entries = {"hello-web": {"stacks": ["acceptance", "staging"],
                             "pipeline": {"stages": DEMO}}, **example_apps()}
    return {name: entries[name] for name in names}


def stages_of(entries: dict, app: str) -> list[dict]:
    return entries[app]["pipeline"]["stages"]


def run_pipelines(scale: float, instance_scale: float, version: str, names: list[str]) -> dict:
    """Each app's whole pipeline, one app after the other, in one sandbox: {app: {"seconds":
    {stage: wall seconds}, "scales": {stage: scale}, "results": the ledger's outcomes}}."""
    from accounts import bootstrap
    from cloud import apps
    from cloud import settings as settings_module
    from cloud.target import connect
    from orchestrator import pipeline, stack
    from sandbox.control import Sandbox
    from tests.conftest import deep_merge, project_config

    entries = app_entries(names)
    found: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as state:
        box = Sandbox(state, time_scale=scale)
        box.up()
        try:
            os.environ.update(box.env())
            raw = deep_merge(project_config(), {
                "sandbox": {"state_dir": state, "time_scale": scale},
                "dist": str(Path(state) / "dist"), "bake": {"copy_regions": [WEST]},
                "deploy": {"watch": "0", "steps": "100", "health_timeout": "10m"},
                "apps": entries})
            settings = settings_module.validate(raw, ["bench"])
            stack.register_clusters(settings)  # every app's acceptance and staging environments
            admin = connect(settings, admin=True)
            bootstrap.run(admin.settings, admin, yes=True)
            for app in names[::-1]:  # the example first: a failure in its stages shows early
                print(f"== {app} at time scales {scale} and {instance_scale}", file=sys.stderr,
                      flush=True)
                aws = connect(apps.for_app(settings, app))
                found[app] = {"seconds": {}, "scales": {}}
                for stage in stages_of(entries, app):
                    used = instance_scale if stage["action"] in INSTANCES else scale
                    box.set_time_scale(used)
                    if stage["action"] == "approval":
                        pipeline.decide(aws, version, True, "bench")
                    started = time.monotonic()
                    pipeline.run(aws, version, stage["name"], stage["name"])
                    found[app]["seconds"][stage["name"]] = time.monotonic() - started
                    found[app]["scales"][stage["name"]] = used
                found[app]["results"] = pipeline.results(
                    aws, app, pipeline.release_id(aws.settings, version))
        finally:
            box.down()
    return found


def split(low: tuple[float, float], high: tuple[float, float]) -> tuple[float, float]:
    """(work, waits at scale 1) from (scale, wall) at two scales: wall = work + scale × waits."""
    (s1, w1), (s2, w2) = low, high
    waits = max(0.0, (w2 - w1) / (s2 - s1))
    return max(0.0, w1 - s1 * waits), waits


def clock(total: float) -> str:
    minutes, rest = divmod(int(round(total)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def parts(run: dict, app: str, stage: dict) -> dict[str, float]:
    """A stage's wall seconds in one run, in parts: the image stage's are the bake's steps and
    the promotion (the stage less the bake); any other stage is one part."""
    name = stage["name"]
    if stage["action"] != "image":
        return {name: run[app]["seconds"][name]}
    found = dict(run[app]["results"]["image"]["evidence"]["timings"] or {})
    found["promotion"] = run[app]["seconds"][name] - sum(found.values())
    return found


def on_aws(runs: list[dict], app: str, stage: dict) -> dict[str, tuple[float, float]]:
    """(work, waits on AWS) of each part of one stage of one app, from its two runs. Only the
    parts that wait for something the sandbox models are split; the others are all work, the
    mean of the two runs (split, their noise would be multiplied by 1 / (s2 - s1))."""
    scale = [r[app]["scales"][stage["name"]] for r in runs]
    walls = [parts(r, app, stage) for r in runs]
    found = {}
    for part in walls[0]:
        pair = [w.get(part, 0.0) for w in walls]
        if stage["action"] in WORK or part in WORK_STEPS:
            found[part] = (mean(pair), 0.0)
        else:
            found[part] = split((scale[0], pair[0]), (scale[1], pair[1]))
    return found


def aws_seconds(runs: list[dict], app: str, stage: dict) -> float:
    return sum(work + waits for work, waits in on_aws(runs, app, stage).values())


def report(runs: list[dict], names: list[str], version: str) -> None:
    entries = app_entries(names)
    stage_names = [s["name"] for s in stages_of(entries, names[0])]
    print(f"release {version}: each app's stages, one after another; wall seconds in the two "
          f"sandbox runs (scale in brackets), then on AWS (work + AWS's waits)")
    print(f"{'stage':<12}" + "".join(f" | {app:^34}" for app in names))
    totals = {app: [0.0, 0.0, 0.0] for app in names}
    for name in stage_names:
        row = f"{name:<12}"
        for app in names:
            stage = next(s for s in stages_of(entries, app) if s["name"] == name)
            walls = [r[app]["seconds"][name] for r in runs]
            scales = [r[app]["scales"][name] for r in runs]
            aws = aws_seconds(runs, app, stage)
            shown = "a person" if stage["action"] == "approval" else clock(aws)
            row += (f" | {walls[0]:6.1f}s ({scales[0]:<4}) {walls[1]:6.1f}s ({scales[1]:<4}) "
                    f"{shown:>8}")
            totals[app] = [totals[app][0] + walls[0], totals[app][1] + walls[1],
                           totals[app][2] + aws]
        print(row)
    print(f"{'total':<12}" + "".join(
        f" | {totals[a][0]:6.1f}s {'':6} {totals[a][1]:6.1f}s {'':6} {clock(totals[a][2]):>8}"
        for a in names))
    print("critical path, for each app: " + " → ".join(stage_names)
          + " (each stage waits for the one before it; approval is a person's time)")
    for app in names:
        path = [(s["name"], aws_seconds(runs, app, s)) for s in stages_of(entries, app)]
        total = sum(t for _n, t in path)
        longest = max(path, key=lambda p: p[1])
        print(f"  {app}: {clock(total)} on AWS from commit to production at 100 %, "
              f"{longest[0]} {100 * longest[1] / total:.0f} % of it")
    for stage, what in PARALLEL.items():
        print(f"in parallel, in stage {stage}: {what}")
    for app in names:
        image_parts(runs, app)
        evidence(runs[0], app)


def image_parts(runs: list[dict], app: str) -> None:
    """The image stage's parts: the bake's steps, and the promotion (the stage less the bake)."""
    stage = {"name": "image", "action": "image"}
    walls = [parts(r, app, stage) for r in runs]
    print(f"{app}: the image stage's parts at each scale (seconds), and on AWS:")
    for part, (work, waits) in on_aws(runs, app, stage).items():
        how = "work" if part in WORK_STEPS else "split"
        print(f"  {part:<16} " + " ".join(f"{w.get(part, 0.0):>8.1f}" for w in walls)
              + f"   on AWS {clock(work + waits):>7} ({how})")


def evidence(run: dict, app: str) -> None:
    """What the acceptance and capacity stages recorded (the first run's)."""
    results = run[app]["results"]
    accepted = (results.get("acceptance") or {}).get("evidence") or {}
    if "tests" in accepted:
        print(f"{app}: acceptance {accepted['tests']} tests, {accepted['failures']} failures, "
              f"{accepted['errors']} errors (JUnit XML)")
    load = (results.get("capacity") or {}).get("evidence") or {}
    if load:
        print(f"{app}: capacity {load['requests']} requests, {load['rps']}/s, p95 "
              f"{load['p95_ms']} ms, p99 {load['p99_ms']} ms, errors {load['error_percent']} %"
              f" (thresholds {load['thresholds']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", default="0.05,0.1",
                        help="two time scales, above 1/60 (the network's fastest)")
    parser.add_argument("--instance-scales", default="0.2,0.4",
                        help="two time scales for the stages that start instances")
    parser.add_argument("--apps", default="hello-web,guestbook")
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--save", help="also write the runs' measurements to this JSON file")
    parser.add_argument("--load", help="report the runs of a JSON file --save wrote; run none")
    args = parser.parse_args()
    names = [a for a in args.apps.split(",") if a]
    if args.load:
        runs = json.loads(Path(args.load).read_text())
    else:
        scales = sorted(float(s) for s in args.scales.split(","))
        instance_scales = sorted(float(s) for s in args.instance_scales.split(","))
        if len(scales) != 2 or len(instance_scales) != 2:
            parser.error("--scales and --instance-scales take two scales each")
        runs = [run_pipelines(s, i, args.version, names)
                for s, i in zip(scales, instance_scales, strict=True)]
    if args.save:
        Path(args.save).write_text(json.dumps(runs, indent=1, default=str))
    report(runs, names, args.version)


if __name__ == "__main__":
    import orchestrator.stack  # noqa: F401 - the env stacks in `invoke bootstrap`

    main()
