"""A commit of the demo app through the pipeline `invoke bootstrap` generates on CodePipeline and
CodeBuild, to production, in a private sandbox, against the same stages run by
`invoke pipeline.run` here.

The stages are the demo app's whole pipeline (bench/pipeline.py's): commit (package, sign and
publish), image (a real bake with chef-solo, then the promotion into the prod account),
acceptance and capacity (each against a transient environment of the candidate in prod, reached
from the build through the pipeline subnet's NAT gateway), staging, approval (answered by
`invoke pipeline.approve` as soon as the manual action waits) and production. Each build boots
a sandbox machine, unpacks the source (the checkout and the lock's wheels), installs Kiln's
runtime from it and runs `invoke pipeline.run --stage …`. For each stage: its wall time in the
execution (ListActionExecutions) with its build's phases (BatchGetBuilds), and on this machine
(`invoke pipeline.run --stage`, start-up included); the AWS calls Kiln made (each stage's line
says them, in the build's log as here); the calls the bench made to drive the execution (a CI or
a person would make them too).

Run: .venv/bin/python bench/pipeline_engine.py [--scale 0.002]
(needs chef-solo and fpm on PATH, as a bake does)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
APP = "hello-web"
NAME = f"kiln-pipeline-{APP}"


def wait(check, what: str, timeout: float = 1800):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(2)
    raise SystemExit(f"timed out waiting for {what}")


def config(egress: str | None = None) -> dict:
    """kiln overrides: the demo app's whole pipeline on CodePipeline, its acceptance requests
    admitted from this host and, once the build stack says it, the pipeline's NAT address."""
    from pipeline import DEMO

    cidrs = ["127.0.0.1/32", *([f"{egress}/32"] if egress else [])]
    return {"deploy": {"watch": "0", "steps": "100", "health_timeout": "10m",
                       "self_service": {"source_cidrs": cidrs}},
            "apps": {APP: {"stacks": ["acceptance", "staging"], "pipeline": {
                "engine": "codepipeline", "source": {"kind": "s3"}, "stages": DEMO}}}}


class Requests:
    """The AWS requests the sandbox's endpoint answered (its log: one line per request, from
    Kiln here and in the builds and from the bench alike; CodePipeline's and CodeBuild's own
    work runs inside the sandbox and makes none) from when `start()` was called."""

    def __init__(self, folder: Path):
        self.log, self.offset = folder / "moto.log", 0

    def start(self) -> None:
        self.offset = self.log.stat().st_size

    def count(self) -> int:
        with self.log.open("rb") as log:
            log.seek(self.offset)
            return sum(1 for line in log if re.search(rb'"(GET|POST|PUT|DELETE|HEAD) /', line)
                       and b"/moto-api/" not in line)


def on_codepipeline(settings, raw: dict, folder: Path, env: dict) -> dict:
    """The execution of 1.1.0: per stage, its seconds, its build's phases and Kiln's calls."""
    import boto3

    from accounts import bootstrap
    from cloud import stacks
    from cloud.target import connect
    from orchestrator import codepipeline, stack
    from tests.conftest import deep_merge
    from tests.pipeline_helpers import source_with_config

    stack.register_clusters(settings)
    codepipeline.register(settings)
    admin = connect(settings, admin=True)
    bootstrap.run(admin.settings, admin, yes=True)
    operator = connect(settings)
    egress = stacks.output(operator, "build", "PipelineEgressIp")
    overrides = config(egress)
    bench_yaml = write_config(folder, deep_merge(raw, overrides))
    invoke(bench_yaml, env, "pipeline.key")
    bucket = stacks.output(operator, f"pipeline-{APP}", "ArtifactBucketName")
    codepipeline.upload(operator, APP, bucket, f"source/{APP}.zip", source_with_config(overrides))
    client = boto3.client("codepipeline")
    driving = 0  # the bench's own calls: starting, watching, approving
    requests = Requests(folder)
    requests.start()
    started = time.monotonic()
    execution = client.start_pipeline_execution(name=NAME, variables=[
        {"name": "KILN_VERSION", "value": "1.1.0"}])["pipelineExecutionId"]
    approval = next(i for i, s in enumerate(client.get_pipeline(name=NAME)["pipeline"]["stages"])
                    if s["name"] == "approval")

    def state() -> dict:
        nonlocal driving
        driving += 1
        found = client.get_pipeline_state(name=NAME)["stageStates"][approval]
        return found["actionStates"][0].get("latestExecution") or {}

    def status() -> str:
        nonlocal driving
        driving += 1
        return client.get_pipeline_execution(pipelineName=NAME, pipelineExecutionId=execution)[
            "pipelineExecution"]["status"]

    wait(lambda: state().get("token") or status() != "InProgress", "the approval")
    if status() == "InProgress":
        invoke(bench_yaml, env, "pipeline.approve", "--version", "1.1.0", "--comment", "bench")
    wait(lambda: status() != "InProgress", "the execution's end")
    wall = time.monotonic() - started
    return {"status": status(), "wall": wall, "driving": driving, "requests": requests.count(),
            "stages": stage_rows(client, execution), "config": bench_yaml}


def stage_rows(client, execution: str) -> dict:
    import boto3

    actions = client.list_action_executions(pipelineName=NAME, filter={
        "pipelineExecutionId": execution})["actionExecutionDetails"]
    ids = [a["output"]["executionResult"]["externalExecutionId"] for a in actions
           if a["input"]["actionTypeId"]["provider"] == "CodeBuild"
           and a.get("output", {}).get("executionResult", {}).get("externalExecutionId")]
    builds = {b["id"]: b for b in boto3.client("codebuild").batch_get_builds(ids=ids)["builds"]}
    stages = {}
    for action in sorted(actions, key=lambda a: a["startTime"]):
        seconds = (action["lastUpdateTime"] - action["startTime"]).total_seconds()
        row = stages.setdefault(action["stageName"], {"seconds": 0.0, "actions": []})
        row["seconds"] += seconds
        row["actions"].append((action["actionName"], action["status"], seconds))
        build = builds.get(action.get("output", {}).get("executionResult", {}).get(
            "externalExecutionId"))
        if build:
            row["phases"] = {p["phaseType"]: p.get("durationInSeconds", 0)
                             for p in build["phases"]}
            row["kiln_calls"], row["log"] = calls_in_log(build)
    return stages


def calls_in_log(build: dict) -> tuple[int | None, str]:
    import boto3

    logs = build["logs"]
    events = boto3.client("logs").get_log_events(logGroupName=logs["groupName"],
                                                 logStreamName=logs["streamName"])["events"]
    text = "\n".join(e["message"] for e in events)
    found = re.search(r"stage \S+: passed in \S+ \((\d+) AWS calls\)", text)
    return (int(found.group(1)) if found else None), text


def on_this_machine(bench_yaml: Path, env: dict, stages: list[dict], folder: Path) -> dict:
    """The same stages for 1.2.0, each by `invoke pipeline.run --stage` as the operator (the
    command's whole wall time, start-up included), the approval given first."""
    requests = Requests(folder)
    requests.start()
    found = {}
    for stage in stages:
        if stage["action"] == "approval":
            invoke(bench_yaml, env, "pipeline.approve", "--version", "1.2.0", "--comment",
                   "bench")
        started = time.monotonic()
        result = invoke(bench_yaml, env, "pipeline.run", "--version", "1.2.0", "--stage",
                        stage["name"], "--json")
        found[stage["name"]] = {"seconds": time.monotonic() - started,
                                "kiln_calls": result["stages"][0]["api_calls"]}
    found["requests"] = requests.count()
    return found


def write_config(folder: Path, raw: dict) -> Path:
    import yaml

    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump({"kiln": raw}))
    return path


def invoke(config_file: Path, env: dict, *args: str) -> dict | None:
    done = subprocess.run([str(ROOT / ".venv/bin/invoke"), "-f", str(config_file), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"invoke {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout) if done.stdout.strip() else None


def report(engine: dict, local: dict, scale: float) -> None:
    answered = local.pop("requests", None)
    print(f"{APP}: commit to production, time scale {scale}; execution {engine['status']} "
          f"in {engine['wall']:.1f}s")
    print(f"{'stage':<11} {'CodePipeline':>12} {'Kiln calls':>10}   {'laptop':>7} "
          f"{'Kiln calls':>10}   build phases (s)")
    for name, row in engine["stages"].items():
        here = local.get(name, {})
        phases = " ".join(f"{k.lower()} {v}" for k, v in (row.get("phases") or {}).items()
                          if v)
        print(f"{name:<11} {row['seconds']:>11.1f}s {row.get('kiln_calls') or '-':>10}   "
              + (f"{here['seconds']:>6.1f}s {here['kiln_calls']:>10}" if here else f"{'-':>7} "
                 f"{'-':>10}") + f"   {phases}")
    print(f"total       {sum(r['seconds'] for r in engine['stages'].values()):>11.1f}s "
          f"{sum(r.get('kiln_calls') or 0 for r in engine['stages'].values()):>10}   "
          f"{sum(r['seconds'] for r in local.values()):>6.1f}s "
          f"{sum(r['kiln_calls'] for r in local.values()):>10}")
    print(f"the bench's own calls to drive the execution (start, watch, approve): "
          f"{engine['driving']}")
    print(f"requests the sandbox's endpoint answered: {engine['requests']} during the execution "
          f"(Kiln in the builds, pipeline.approve, the bench), {answered} during "
          f"the stages on this machine (Kiln, pipeline.approve)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=0.002, help="the sandbox's time scale")
    parser.add_argument("--keep", help="a state dir to use and leave (to read its logs after)")
    args = parser.parse_args()
    from pipeline import DEMO

    from cloud import settings as settings_module
    from sandbox.control import Sandbox
    from tests.conftest import deep_merge, project_config

    with tempfile.TemporaryDirectory() as temporary:
        state = args.keep or temporary
        box = Sandbox(state, time_scale=args.scale, keep_state=False)
        box.up()
        try:
            env = {**os.environ, **box.env()}
            os.environ.update(box.env("admin"))  # the bench starts and watches the execution
            raw = deep_merge(project_config(), deep_merge(config(), {
                "sandbox": {"state_dir": state, "time_scale": args.scale},
                "dist": str(Path(state) / "dist")}))
            settings = settings_module.validate(raw, ["bench"])
            engine = on_codepipeline(settings, raw, Path(state), env)
            if engine["status"] != "Succeeded":
                for name, row in engine["stages"].items():
                    print(f"== {name}: {row['actions']}\n{row.get('log', '')[-4000:]}",
                          file=sys.stderr)
                report(engine, {}, args.scale)
                raise SystemExit(1)
            local = on_this_machine(engine["config"], env, DEMO, Path(state))
        finally:
            box.down()
    report(engine, local, args.scale)


if __name__ == "__main__":
    main()
