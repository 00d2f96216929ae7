"""The release pipeline (docs/pipeline.md): stages in order from kiln.apps.<app>.pipeline, gates
that remember each version's outcomes in AWS, approval by a named identity, and the override
that is itself recorded. Against the sandbox: a real commit stage (its command, package and
publish), a deploy to the staging cluster, the approval, and a canary promoted in production."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from accounts import bootstrap
from cloud import stacks
from cloud import tags as kiln_tags
from cloud.errors import EXIT_REFUSED
from cloud.target import connect
from orchestrator import operations
from tests.conftest import deep_merge
from tests.deploy_helpers import FAST, env_stack, make_image, register_image

STAGES = [
    {"name": "commit", "action": "commit",
     "commands": ["python3 -c 'print(\"unit tests: 3 passed\")'",
                  "test -f manifests/hello-web.yaml"]},
    {"name": "staging", "action": "deploy", "stack": "staging"},
    {"name": "approval", "action": "approval"},
    {"name": "production", "action": "production", "percent": 10},
]
CONFIG = deep_merge(FAST, {"deploy": {"steps": "100"}, "apps": {"hello-web": {
    "stacks": ["staging"], "pipeline": {"stages": STAGES}}}})
OPERATOR = "arn:aws:iam::123456789012:user/kiln-operator"


@pytest.fixture
def deploy_overrides():
    return CONFIG


@pytest.fixture
def released(kaws, daws, outputs, kiln_settings):
    """Production serves 1.0.0; the staging cluster's environment exists; images 1.1.0 and
    1.2.0 in the deploy account, and 1.1.0's original in the build account (for its tags)."""
    admin = connect(kiln_settings(), admin=True)
    bootstrap.run(admin.settings, admin, yes=True, parts=("build",))
    env_stack(daws, cluster="hello-web-staging")
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        make_image(daws, version, release="1")  # the manifest's iteration: what commit builds
    build_image = build_image_of(admin, "1.1.0", "1")
    operations.deploy(kaws, version="1.0.0")
    # Someone listening to the pipeline's notices: an HTTP endpoint subscribed to its topic.
    listener = Notices()
    topic = stacks.output(admin, "build", "PipelineTopicArn")
    admin.client("sns").subscribe(TopicArn=topic, Protocol="http", Endpoint=listener.url)
    yield {"admin": admin, "image": build_image, "notices": listener}
    listener.close()


def build_image_of(admin, version: str, release: str) -> str:
    ec2 = admin.client("ec2")
    image = register_image(ec2, f"hello-web-{version}-{release}-x86_64")
    ec2.create_tags(Resources=[image], Tags=kiln_tags.to_list(kiln_tags.kiln_tags(
        "hello-web", "image", version=version, **{kiln_tags.RELEASE: release})))
    return image


class Notices(http.server.ThreadingHTTPServer):
    """An HTTP endpoint that keeps the Subject of every notification SNS posts to it."""

    def __init__(self):
        self.subjects: list[str] = []
        received = self.subjects

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if body.get("Type") == "Notification":
                    received.append(body["Subject"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self):
        self.shutdown()
        self.server_close()


def lines_of(result) -> list[str]:
    return result.stderr.strip().splitlines()


def test_a_version_goes_through_its_gates_to_production(run_invoke, kaws, released):
    dry = run_invoke("pipeline.run", "--version", "1.1.0", "--dry-run", overrides=CONFIG,
                     check=True)
    assert "  ▶ commit (commit, gate passed): not run" in lines_of(dry), dry.stderr
    assert "dry run: nothing changed" in lines_of(dry)

    early = run_invoke("pipeline.run", "--version", "1.1.0", "--from", "production",
                       overrides=CONFIG)
    assert early.returncode == EXIT_REFUSED, early.stderr
    assert lines_of(early)[-1] == (
        "kiln: stage production: hello-web 1.1.0-1 has not passed stage commit (nor staging, "
        "approval); run it first, or give --override (recorded)")

    waiting = run_invoke("pipeline.run", "--version", "1.1.0", overrides=CONFIG)
    assert waiting.returncode == EXIT_REFUSED, waiting.stderr
    log = lines_of(waiting)
    assert "unit tests: 3 passed" in waiting.stdout + waiting.stderr
    assert any(line.startswith("[1/4] stage commit: passed in ") for line in log), log
    assert any(line.startswith("[2/4] stage staging: passed in ") for line in log), log
    assert log[-1].startswith("kiln: stage approval: hello-web 1.1.0-1 waits for approval: "
                              "`invoke pipeline.approve --app hello-web --version 1.1.0-1"), log
    assert released["notices"].subjects == [
        "hello-web 1.1.0-1: stage commit passed", "hello-web 1.1.0-1: stage staging passed",
        "hello-web 1.1.0-1: waiting for approval at stage approval"]
    staging = operations.status(kaws, "staging")["server_groups"]
    assert [(g["version"], g["weight"]) for g in staging] == [("1.1.0", 100)]

    run_invoke("pipeline.approve", "--version", "1.1.0", "--comment", "release notes checked",
               overrides=CONFIG, check=True)
    done = run_invoke("pipeline.run", "--version", "1.1.0", "--from", "approval", "--json",
                      overrides=CONFIG, check=True)
    assert [s["stage"] for s in json.loads(done.stdout)["stages"]] == ["approval", "production"]
    assert f"  approved by {OPERATOR}" in lines_of(done)[lines_of(done).index(
        "[1/2] stage approval (approval): started") + 1]
    serving = {g["version"]: g for g in operations.status(kaws)["server_groups"]}
    assert (serving["1.1.0"]["state"], serving["1.1.0"]["weight"]) == ("active", 100)

    events = json.loads(run_invoke("history", "--json", overrides=CONFIG,
                                   check=True).stdout)["events"]
    stages = [(e["event"], e["outcome"]) for e in reversed(events)
              if e["event"].startswith("stage ")]
    assert stages == [("stage commit", "passed"), ("stage staging", "passed"),
                      ("stage approval", "passed"), ("stage production", "passed")]
    approval = next(e for e in events if e["event"] == "stage approval")
    assert (approval["who"], approval["reason"]) == (OPERATOR, "release notes checked")
    commit = next(e for e in events if e["event"] == "stage commit")
    assert [c["status"] for c in commit["evidence"]["commands"]] == [0, 0]
    assert commit["evidence"]["package"].startswith("hello-web-1.1.0-")
    # Deploys made by the pipeline say so in their reason.
    deploys = [e for e in events if e["event"] in ("deploy", "canary", "promote")
               and e["outcome"] == "ok"]
    assert {e["cluster"] for e in deploys} >= {"hello-web", "hello-web-staging"}
    assert all("stage" in e["reason"] for e in deploys if e["to_release"] == "1.1.0")
    # The outcomes are on the image too.
    image = released["admin"].client("ec2").describe_images(ImageIds=[released["image"]])
    found = kiln_tags.from_list(image["Images"][0]["Tags"])
    assert found["kiln:stage:commit"].startswith("passed ")
    assert found["kiln:stage:approval"].endswith(" kiln-operator")


def test_gates_belong_to_one_release_a_rebuild_passes_them_anew(run_invoke, kaws, daws,
                                                                released):
    """Release 2 of 1.1.0 (a rebuild) is the newest image; the pipeline of 1.1.0 is the
    manifest's release 1: its staging runs release 1, and release 2 has passed nothing."""
    make_image(daws, "1.1.0", release="2")
    rebuilt = build_image_of(released["admin"], "1.1.0", "2")
    run_invoke("pipeline.run", "--version", "1.1.0", "--to", "staging", overrides=CONFIG,
               check=True)
    staging = operations.status(kaws, "staging")["server_groups"]
    assert [g["release_id"] for g in staging] == ["1.1.0-1"]
    refused = run_invoke("pipeline.run", "--version", "1.1.0-2", "--from", "approval",
                         overrides=CONFIG)
    assert refused.returncode == EXIT_REFUSED, refused.stderr
    assert lines_of(refused)[-1].startswith(
        "kiln: stage approval: hello-web 1.1.0-2 has not passed stage commit (nor staging)")
    ec2 = released["admin"].client("ec2")
    tagged = {i["ImageId"]: kiln_tags.from_list(i["Tags"]) for i in ec2.describe_images(
        ImageIds=[released["image"], rebuilt])["Images"]}
    assert tagged[released["image"]]["kiln:stage:staging"].startswith("passed ")
    assert not [k for k in tagged[rebuilt] if k.startswith("kiln:stage:")], tagged[rebuilt]


def test_a_rejected_version_is_refused_and_an_override_is_recorded(run_invoke, released):
    refused = run_invoke("pipeline.reject", "--version", "1.2.0", overrides=CONFIG)
    assert refused.returncode == EXIT_REFUSED
    assert "has not passed stage commit (nor staging)" in lines_of(refused)[-1]
    run_invoke("pipeline.reject", "--version", "1.2.0", "--override", "--comment",
               "p99 too high in staging", overrides=CONFIG, check=True)
    stopped = run_invoke("pipeline.run", "--version", "1.2.0", "--from", "approval",
                         "--override", overrides=CONFIG)
    assert stopped.returncode == 1, stopped.stderr
    assert lines_of(stopped)[-1] == (
        f"kiln: stage approval: hello-web 1.2.0-1 was rejected by {OPERATOR}: p99 too high in "
        "staging")
    events = json.loads(run_invoke("history", "--json", overrides=CONFIG,
                                   check=True).stdout)["events"]
    overrides = [e for e in events if e["event"] == "override approval"]
    assert overrides and overrides[-1]["evidence"] == {"missing": ["commit", "staging"]}
    assert overrides[-1]["who"] == OPERATOR


def test_a_bad_stage_key_is_one_line(run_invoke):
    bad = deep_merge(CONFIG, {"apps": {"hello-web": {"pipeline": {"stages": [
        {"name": "staging", "action": "deploy", "stak": "staging"}]}}}})
    result = run_invoke("pipeline.run", "--version", "1.1.0", overrides=bad)
    assert result.returncode == EXIT_REFUSED
    assert lines_of(result)[-1].endswith(
        "kiln.apps.hello-web.pipeline.stages[0].stak: unknown key for a deploy stage (did you "
        "mean 'stack'?)"), result.stderr
