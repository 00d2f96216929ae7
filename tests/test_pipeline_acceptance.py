"""The acceptance stage: a transient environment of the candidate image behind a non-production
stack's load balancer, the app's acceptance command run against it (KILN_URL and friends; a
JUnit XML file it writes is read for counts), and the environment removed after, whether the
command passed, failed or was cancelled; also from the generated pipeline's build in the
sandbox's CodeBuild. The image is a sandbox machine serving a web app."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import boto3
import pytest
import yaml

from accounts import bootstrap
from cloud import stacks
from cloud.errors import EXIT_INTERRUPTED
from cloud.target import connect
from orchestrator import codepipeline
from tests.conftest import INVOKE, ROOT, deep_merge
from tests.deploy_helpers import FAST, env_stack
from tests.machine_helpers import promoted_web_image
from tests.pipeline_helpers import source_with_config

pytestmark = pytest.mark.slow

CHECK = ('curl -fsS --resolve "$KILN_RESOLVE" --cacert "$KILN_CA_BUNDLE" -H "$KILN_HEADER" '
         '"$KILN_URL" | grep -F "version $KILN_VERSION" && '
         'printf \'<testsuite tests="4" failures="0" errors="0" skipped="1"/>\' '
         '> "$KILN_JUNIT_XML"')


def config(command: str) -> dict:
    return deep_merge(FAST, {"deploy": {"health_timeout": "90s"}, "apps": {"hello-web": {
        "stacks": ["acceptance"], "pipeline": {"stages": [
            {"name": "acceptance", "action": "acceptance", "stack": "acceptance",
             "command": command}]}}}})


@pytest.fixture
def deploy_overrides():
    return config(CHECK)


@pytest.fixture
def candidate(clean_sandbox, kaws, daws, kiln_settings):
    admin = connect(kiln_settings(), admin=True)
    bootstrap.run(admin.settings, admin, yes=True, parts=("build",))
    outputs = env_stack(daws, cluster="hello-web-acceptance")
    promoted_web_image(clean_sandbox, daws, "1.3.0", status=200, release="1")
    return outputs


def left(daws, outputs) -> dict:
    groups = daws.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]
    rules = daws.client("elbv2").describe_rules(ListenerArn=outputs["ListenerArn"])["Rules"]
    return {"groups": [g["AutoScalingGroupName"] for g in groups],
            "rules": [r["RuleArn"] for r in rules if not r["IsDefault"]]}


def test_acceptance_passes_against_the_candidate_and_removes_it(run_invoke, daws, candidate):
    done = run_invoke("pipeline.run", "--version", "1.3.0", "--json",
                      overrides=config(CHECK), check=True)
    assert json.loads(done.stdout)["stages"][0]["outcome"] == "passed"
    assert "version 1.3.0" in done.stdout + done.stderr
    assert left(daws, candidate) == {"groups": [], "rules": []}
    events = json.loads(run_invoke("history", "--json", overrides=config(CHECK),
                                   check=True).stdout)["events"]
    evidence = next(e for e in events if e["event"] == "stage acceptance")["evidence"]
    assert (evidence["status"], evidence["tests"], evidence["failures"], evidence["skipped"]
            ) == (0, 4, 0, 1)
    assert evidence["server_group"] == "hello-web-candidate-v001"


def test_a_failing_acceptance_command_fails_the_stage_and_still_removes_it(
        run_invoke, daws, candidate):
    failed = run_invoke("pipeline.run", "--version", "1.3.0",
                        overrides=config('test "$KILN_VERSION" = 9.9.9'))
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.strip().splitlines()[-1] == (
        'kiln: stage acceptance: `test "$KILN_VERSION" = 9.9.9` exited 1')
    assert left(daws, candidate) == {"groups": [], "rules": []}


def test_a_cancelled_acceptance_removes_the_environment(config_overrides, tmp_path, daws,
                                                        candidate):
    runtime = tmp_path / "kiln-test.yaml"
    runtime.write_text(yaml.safe_dump({"kiln": deep_merge(config_overrides,
                                                          config("sleep 120"))}))
    process = subprocess.Popen([INVOKE, "-f", str(runtime), "pipeline.run", "--version",
                                "1.3.0"], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    lines, running = [], threading.Event()

    def read():
        for line in process.stderr:
            lines.append(line.rstrip("\n"))
            if line.startswith("  $ sleep 120"):
                running.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert running.wait(300), "\n".join(lines)
        process.send_signal(signal.SIGTERM)
        process.wait(120)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(10)
    assert process.returncode == EXIT_INTERRUPTED, "\n".join(lines)
    assert left(daws, candidate) == {"groups": [], "rules": []}
    assert "[1/1] stage acceptance: interrupted after" in "\n".join(lines)
    assert "to go on: `invoke pipeline.run --app hello-web --version 1.3.0-1 --from acceptance`" \
        in lines


# In a build the machine trusts the sandbox CA that signs the listener's certificate, as an AMI
# trusts the public CAs that sign ACM's: KILN_CA_BUNDLE is the machine's system bundle.
BUILD_CHECK = ('curl -fsS --resolve "$KILN_RESOLVE" --cacert "$KILN_CA_BUNDLE" '
               '-H "$KILN_HEADER" "$KILN_URL" | grep -F "version $KILN_VERSION" && '
               'echo \'<testsuite tests="1" failures="0" errors="0"/>\' > "$KILN_JUNIT_XML"')
SOURCE_BUCKET = "hello-web-source"


def engine(source_cidrs: list[str] | None = None) -> dict:
    found = deep_merge(config(BUILD_CHECK), {"repo": {"sign": False}, "apps": {"hello-web": {
        "pipeline": {"engine": "codepipeline",
                     "source": {"kind": "s3", "bucket": SOURCE_BUCKET}}}}})
    if source_cidrs:
        found["deploy"]["self_service"] = {"source_cidrs": source_cidrs}
    return found


def test_the_generated_pipelines_acceptance_stage_reaches_the_candidate_from_its_build(
        clean_sandbox, kaws, daws, kiln_settings):
    """The acceptance stage's build, in the bake VPC's pipeline subnet, reaches the candidate
    through the stack's load balancer by its DNS name, its requests coming from the subnet's NAT
    gateway: the environment's listener rule admits that address alone (PipelineEgressIp in
    source_cidrs, as on AWS); the command checks the listener's certificate against the CA
    bundle it is handed, the build machine's own."""
    clean_sandbox.set_time_scale(None)
    settings = kiln_settings(**engine())
    codepipeline.register(settings)
    # prod's deployer role comes to trust the pipeline's project roles.
    bootstrap.run(settings, connect(settings, admin=True), yes=True,
                  parts=("prod", "build", "pipeline-hello-web"))
    env_stack(daws, cluster="hello-web-acceptance")
    promoted_web_image(clean_sandbox, daws, "1.3.0", status=200, release="1")
    egress = stacks.output(kaws, "build", "PipelineEgressIp")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=SOURCE_BUCKET)
    s3.put_bucket_versioning(Bucket=SOURCE_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=SOURCE_BUCKET, Key="source/hello-web.zip",
                  Body=source_with_config(engine([f"{egress}/32"])))
    pipelines, name = boto3.client("codepipeline"), "kiln-pipeline-hello-web"
    started = pipelines.start_pipeline_execution(name=name, variables=[
        {"name": "KILN_VERSION", "value": "1.3.0"}])["pipelineExecutionId"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = pipelines.get_pipeline_execution(pipelineName=name, pipelineExecutionId=started)[
            "pipelineExecution"]["status"]
        if status != "InProgress":
            break
        time.sleep(0.5)
    logs, group = boto3.client("logs"), "/kiln/pipeline/hello-web"
    text = "\n".join(e["message"] for found in logs.describe_log_streams(
        logGroupName=group, logStreamNamePrefix="acceptance/")["logStreams"]
        for e in logs.get_log_events(logGroupName=group,
                                     logStreamName=found["logStreamName"])["events"])
    assert status == "Succeeded", text
    assert f"reached with header X-Kiln-Env: candidate from {egress}/32" in text
    assert "\nversion 1.3.0\n" in f"\n{text}\n"
    assert "[1/1] stage acceptance: passed in " in text
    # Its JUnit report is kept beside the stage's record, as on the laptop.
    bucket = stacks.output(kaws, "build", "RepoBucket")
    kept = s3.list_objects_v2(Bucket=bucket, Prefix="pipeline/hello-web/1.3.0")["Contents"]
    assert [o["Key"].rsplit("/", 2)[1:] for o in kept] == [["acceptance", "junit.xml"]]
