"""The capacity and exploratory stages (docs/pipeline.md). Capacity: Locust, headless, against a
transient environment of the candidate, its figures held against the stage's thresholds and its
report kept in S3 where the stage's record points. Exploratory: an environment of the candidate
kept up for people to try, the stage waiting until someone approves or rejects it, the decision
removing it. One sandbox world (bootstrap, the acceptance stack, a web app's image) serves the
module."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from accounts import bootstrap
from cloud import settings as settings_module
from cloud.errors import EXIT_REFUSED
from cloud.target import connect
from orchestrator import capacity
from tests.conftest import deep_merge, project_config
from tests.deploy_helpers import FAST, env_stack
from tests.machine_helpers import promoted_web_image

# One worker runs the module (an xdist group): its module-scoped `world` (a bootstrapped
# sandbox, an environment and an image) is made once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pipeline-stages")]

LOAD = {"name": "capacity", "action": "capacity", "stack": "acceptance", "users": 4,
        "spawn_rate": 4, "duration": "4s",
        "thresholds": {"min_rps": 0.5, "max_p95_ms": 5000, "max_error_percent": 0}}


def config(*stages: dict) -> dict:
    return deep_merge(FAST, {"deploy": {"health_timeout": "90s"}, "apps": {"hello-web": {
        "stacks": ["acceptance"], "pipeline": {"stages": list(stages)}}}})


@pytest.fixture(scope="module")
def world(sandbox_box, tmp_path_factory):
    """A fresh sandbox, bootstrapped, with the acceptance stack's environment and image 1.3.0-1
    of a web app in the deploy account; the module's tests share it."""
    sandbox_box.reset()
    overrides = {"sandbox": {"state_dir": str(sandbox_box.state_dir)},
                 "dist": str(tmp_path_factory.mktemp("dist"))}
    settings = settings_module.validate(deep_merge(deep_merge(project_config(), overrides),
                                                   config(LOAD)), ["test config"])
    admin = connect(settings, admin=True)
    bootstrap.run(admin.settings, admin, yes=True, parts=("prod", "build"))
    daws = connect(settings).account("prod")
    outputs = env_stack(daws, cluster="hello-web-acceptance")
    promoted_web_image(sandbox_box, daws, "1.3.0", status=200, release="1")
    return {"admin": admin, "daws": daws, "outputs": outputs}


def groups(world) -> list[str]:
    found = world["daws"].client("autoscaling").describe_auto_scaling_groups()
    return [g["AutoScalingGroupName"] for g in found["AutoScalingGroups"]]


def stage_events(run_invoke, stage: str) -> list[dict]:
    done = run_invoke("history", "--json", overrides=config(LOAD), check=True)
    return [e for e in json.loads(done.stdout)["events"] if e["event"] == f"stage {stage}"]


def test_capacity_loads_the_candidate_and_keeps_its_report(world, run_invoke):
    done = run_invoke("pipeline.run", "--version", "1.3.0", "--json", overrides=config(LOAD))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stages"][0]["outcome"] == "passed"
    assert groups(world) == []  # the candidate is gone
    evidence = stage_events(run_invoke, "capacity")[0]["evidence"]
    assert evidence["requests"] > 0 and evidence["failures"] == 0, evidence
    assert evidence["rps"] >= 0.5 and evidence["p95_ms"] is not None, evidence
    assert evidence["breaches"] == [] and evidence["thresholds"] == LOAD["thresholds"]
    report = urlsplit(evidence["report"])
    assert report.path.startswith("/pipeline/hello-web/1.3.0-1/"), evidence["report"]
    kept = world["admin"].client("s3").list_objects_v2(Bucket=report.netloc,
                                                       Prefix=report.path.lstrip("/"))
    names = sorted(o["Key"].rsplit("/", 1)[1] for o in kept["Contents"])
    assert names == ["capacity.html", "capacity_failures.csv", "capacity_stats.csv"]


def test_capacity_fails_on_a_missed_threshold(world, run_invoke):
    peak = {**LOAD, "name": "peak", "duration": "3s", "thresholds": {"min_rps": 100000}}
    failed = run_invoke("pipeline.run", "--version", "1.3.0", overrides=config(peak))
    assert failed.returncode == 1, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("kiln: stage peak: rps ") and last.endswith("(at least 100000)"), last
    assert groups(world) == []
    recorded = stage_events(run_invoke, "peak")[0]
    assert recorded["outcome"] == "failed"
    assert recorded["evidence"]["breaches"][0].endswith("(at least 100000)")


def test_exploratory_keeps_the_candidate_up_until_someone_decides(world, run_invoke):
    explore = config({"name": "exploratory", "action": "exploratory", "ttl": "1h"},
                     {"name": "approval", "action": "approval"})
    for _attempt in range(2):  # run again while it waits: the same environment, not a second
        waiting = run_invoke("pipeline.run", "--version", "1.3.0", overrides=explore)
        assert waiting.returncode == EXIT_REFUSED, waiting.stderr
        last = waiting.stderr.strip().splitlines()[-1]
        assert last.startswith("kiln: stage exploratory: hello-web 1.3.0-1 is up for "
                               "exploratory testing at https://"), last
        assert "`invoke pipeline.approve --app hello-web --version 1.3.0-1 --stage exploratory" \
            in last
        assert groups(world) == ["hello-web-exploratory-v001"]
    run_invoke("pipeline.approve", "--version", "1.3.0", "--comment", "tried the new page",
               overrides=explore, check=True)  # the first manual stage without a decision
    assert groups(world) == []
    done = run_invoke("pipeline.run", "--version", "1.3.0", "--to", "exploratory",
                      overrides=explore, check=True)
    assert "  approved by arn:aws:iam::123456789012:user/kiln-operator" in done.stderr
    decided = stage_events(run_invoke, "exploratory")[0]
    assert (decided["outcome"], decided["reason"]) == ("passed", "tried the new page")


def test_a_capacity_threshold_is_checked_when_settings_load(run_invoke):
    bad = config({**LOAD, "thresholds": {"max_p95": 300}})
    refused = run_invoke("pipeline.run", "--version", "1.3.0", overrides=bad)
    assert refused.returncode == EXIT_REFUSED
    assert refused.stderr.strip().splitlines()[-1].endswith(
        "kiln.apps.hello-web.pipeline.stages[0].thresholds.max_p95: unknown threshold (did you "
        "mean 'max_p95_ms'?) (thresholds: min_rps, max_p95_ms, max_p99_ms, max_error_percent)")


def test_no_requests_is_no_pass():
    assert capacity.breaches({"requests": 0}, {"max_error_percent": 1}) == [
        "no request was answered or failed: no figures to judge"]
    figures = {"requests": 100, "rps": 40.0, "p95_ms": 120.0, "p99_ms": 900.0,
               "error_percent": 0.0}
    assert capacity.breaches(figures, {"min_rps": 40, "max_p95_ms": 150, "max_p99_ms": 500}) \
        == ["p99_ms 900.0 (at most 500)"]
