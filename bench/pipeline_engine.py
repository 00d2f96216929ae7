"""A commit of the demo app through the pipeline `invoke bootstrap` generates on CodePipeline and
CodeBuild, in a private sandbox, against the same stages run by `invoke pipeline.run` here.

The stages are those a sandbox build runs to their end today (docs/pipeline-engines.md): commit
(package and publish 1.1.0) and approval (given as soon as the manual action waits). Each build
boots a sandbox machine, unpacks the source (the checkout and the lock's wheels), installs
Kiln's runtime from it and runs `invoke pipeline.run --stage …`. For each stage: its wall time
in the execution (ListActionExecutions) with its build's phases (BatchGetBuilds), and on this
machine; the AWS calls Kiln made (each stage's line says them, in the build's log as here); the
calls the bench made to drive the execution (a CI or a person would make them too).

Run: .venv/bin/python bench/pipeline_engine.py [--scale 0.002]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
APP = "hello-web"
BUCKET = "hello-web-source"
STAGES = [{"name": "commit", "action": "commit", "commands": ["test -f manifests/hello-web.yaml"]},
          {"name": "approval", "action": "approval"}]
CONFIG = {"repo": {"sign": False},  # the builds get no signing key yet
          "apps": {APP: {"pipeline": {"engine": "codepipeline", "stages": STAGES,
                                      "source": {"kind": "s3", "bucket": BUCKET}}}}}


def wait(check, what: str, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(1)
    raise SystemExit(f"timed out waiting for {what}")


def on_codepipeline(settings, box) -> dict:
    """The execution of 1.1.0: per stage, its seconds, its build's phases and Kiln's calls."""
    import boto3

    from accounts import bootstrap
    from cloud.target import connect
    from orchestrator import codepipeline, pipeline
    from tests.pipeline_helpers import source_with_config

    codepipeline.register(settings)
    bootstrap.run(settings, connect(settings, admin=True), yes=True,
                  parts=("build", f"pipeline-{APP}"))
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=BUCKET, Key=f"source/{APP}.zip", Body=source_with_config(CONFIG))
    client, name = boto3.client("codepipeline"), f"kiln-pipeline-{APP}"
    driving = 0  # the bench's own calls: starting, watching, approving
    started = time.monotonic()
    execution = client.start_pipeline_execution(name=name, variables=[
        {"name": "KILN_VERSION", "value": "1.1.0"}])["pipelineExecutionId"]

    def state(stage: int) -> dict:
        nonlocal driving
        driving += 1
        found = client.get_pipeline_state(name=name)["stageStates"][stage]
        return found["actionStates"][0].get("latestExecution") or {}

    def status() -> str:
        nonlocal driving
        driving += 1
        return client.get_pipeline_execution(pipelineName=name, pipelineExecutionId=execution)[
            "pipelineExecution"]["status"]

    wait(lambda: state(2).get("token") or status() == "Failed", "the approval")
    operator = connect(settings)
    calls = operator.calls.total
    pipeline.decide(operator, "1.1.0", True, "bench")
    driving += operator.calls.total - calls
    wait(lambda: status() != "InProgress", "the execution's end")
    wall = time.monotonic() - started
    actions = client.list_action_executions(pipelineName=name, filter={
        "pipelineExecutionId": execution})["actionExecutionDetails"]
    builds = {b["id"]: b for b in boto3.client("codebuild").batch_get_builds(ids=[
        a["output"]["executionResult"]["externalExecutionId"] for a in actions
        if a["input"]["actionTypeId"]["provider"] == "CodeBuild"])["builds"]}
    stages = {}
    for action in sorted(actions, key=lambda a: a["startTime"]):
        seconds = (action["lastUpdateTime"] - action["startTime"]).total_seconds()
        row = stages.setdefault(action["stageName"], {"seconds": 0.0, "actions": []})
        row["seconds"] += seconds
        row["actions"].append((action["actionName"], action["status"], seconds))
        build = builds.get(action["output"].get("executionResult", {}).get(
            "externalExecutionId"))
        if build:
            row["phases"] = {p["phaseType"]: p.get("durationInSeconds", 0)
                             for p in build["phases"]}
            row["kiln_calls"] = _calls_in_log(build)
    return {"status": status(), "wall": wall, "stages": stages, "driving": driving}


def _calls_in_log(build: dict) -> int | None:
    import boto3

    logs = build["logs"]
    events = boto3.client("logs").get_log_events(logGroupName=logs["groupName"],
                                                 logStreamName=logs["streamName"])["events"]
    for event in events:
        found = re.search(r"stage \S+: passed in \S+ \((\d+) AWS calls\)", event["message"])
        if found:
            return int(found.group(1))
    return None


def on_this_machine(raw: dict, box, folder: Path) -> dict:
    """The same two stages of 1.2.0, each by `invoke pipeline.run --stage` as the operator (the
    command's whole wall time, start-up included), the approval given first."""
    import yaml

    config = folder / "bench.yaml"
    config.write_text(yaml.safe_dump({"kiln": raw}))
    env = {**os.environ, **box.env()}
    stages = {}
    for stage in STAGES:
        if stage["action"] == "approval":
            invoke(config, env, "pipeline.approve", "--version", "1.2.0", "--comment", "bench")
        started = time.monotonic()
        result = invoke(config, env, "pipeline.run", "--version", "1.2.0", "--stage",
                        stage["name"], "--json")
        stages[stage["name"]] = {"seconds": time.monotonic() - started,
                                 "kiln_calls": result["stages"][0]["api_calls"]}
    return stages


def invoke(config: Path, env: dict, *args: str) -> dict | None:
    import json
    import subprocess

    done = subprocess.run([str(ROOT / ".venv/bin/invoke"), "-f", str(config), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"invoke {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout) if done.stdout.strip() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=0.002, help="the sandbox's time scale")
    args = parser.parse_args()
    from cloud import settings as settings_module
    from sandbox.control import Sandbox
    from tests.conftest import deep_merge, project_config

    with tempfile.TemporaryDirectory() as state:
        box = Sandbox(state, time_scale=args.scale, keep_state=False)
        box.up()
        try:
            os.environ.update(box.env("admin"))
            raw = deep_merge(project_config(), deep_merge(CONFIG, {
                "sandbox": {"state_dir": state}, "dist": str(Path(state) / "dist")}))
            settings = settings_module.validate(raw, ["bench"])
            engine = on_codepipeline(settings, box)
            local = on_this_machine(raw, box, Path(state))
        finally:
            box.down()
    print(f"{APP}: commit and approval, time scale {args.scale}; execution {engine['status']} "
          f"in {engine['wall']:.1f}s")
    print(f"{'stage':<10} {'CodePipeline':>12} {'Kiln calls':>10}   {'laptop':>7} "
          f"{'Kiln calls':>10}   build phases (s)")
    for name, row in engine["stages"].items():
        here = local.get(name, {})
        phases = " ".join(f"{k.lower()} {v}" for k, v in (row.get("phases") or {}).items()
                          if v)
        print(f"{name:<10} {row['seconds']:>11.1f}s {row.get('kiln_calls') or '-':>10}   "
              + (f"{here['seconds']:>6.1f}s {here['kiln_calls']:>10}" if here else f"{'-':>7} "
                 f"{'-':>10}") + f"   {phases}")
    print(f"the bench's own calls to drive the execution (start, watch, approve): "
          f"{engine['driving']}")


if __name__ == "__main__":
    main()
