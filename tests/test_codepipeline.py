"""An app's pipeline on CodePipeline (orchestrator/codepipeline.py): the stack kiln-pipeline-<app>
that `invoke bootstrap` plans from the app's stages, its generated buildspecs, and
`invoke pipeline.status` before that stack exists."""

from __future__ import annotations

import io
import json
import subprocess
import time
import zipfile

import boto3
import pytest
import yaml

from accounts import bootstrap, verify
from cloud import settings as settings_module
from cloud import stacks
from cloud import tags as kiln_tags
from cloud.aws import Aws
from cloud.errors import ConfigError, KilnError
from cloud.target import connect
from orchestrator import codepipeline, pipeline, pipeline_key
from packager import signing
from sandbox import control
from tests.conftest import ROOT, project_config
from tests.pipeline_helpers import (
    SOURCES,
    STAGES,
    engine_config,
    engine_settings,
    source_with_config,
)
from tests.test_templates import CFN_LINT

APP = "hello-web"


def rendered(source: str = "s3") -> dict:
    return json.loads(codepipeline.template(engine_settings(source), APP))


def test_the_pipeline_templates_pass_cfn_lint(tmp_path):
    """One per kind of source, in one cfn-lint run (it takes seconds to start)."""
    paths = []
    for source in sorted(SOURCES):
        paths.append(tmp_path / f"pipeline-{source}.json")
        paths[-1].write_text(codepipeline.template(engine_settings(source), APP))
    result = subprocess.run([CFN_LINT, "--format", "parseable", *map(str, paths)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_buildspec_runs_exactly_its_stage_command():
    resources = rendered()["Resources"]
    projects = {r["Properties"]["Name"]: r["Properties"] for r in resources.values()
                if r["Type"] == "AWS::CodeBuild::Project"}
    assert sorted(projects) == sorted(f"kiln-pipeline-{APP}-{s['name']}" for s in STAGES)
    for stage in STAGES:
        spec = yaml.safe_load(projects[f"kiln-pipeline-{APP}-{stage['name']}"]["Source"][
            "BuildSpec"])
        assert spec["phases"]["build"]["commands"] == [
            f'invoke pipeline.run --app {APP} --stage {stage["name"]} --version "$KILN_VERSION"']
        assert codepipeline.stage_command(APP, stage["name"]) == \
            spec["phases"]["build"]["commands"][0]
        # Kiln's runtime installed from the source's wheelhouse alone, by the lock's hashes.
        install = spec["phases"]["install"]["commands"]
        assert ".venv/bin/pip install -q --no-compile --no-index --find-links wheelhouse " \
               "--no-deps --require-hashes -r wheelhouse/requirements.txt" in install
        assert not any("uv sync" in command for command in install)
        target = {"Name": "INVOKE_KILN_TARGET", "Type": "PLAINTEXT",
                  "Value": {"Ref": "KilnTarget"}}
        variables = projects[f"kiln-pipeline-{APP}-{stage['name']}"]["Environment"][
            "EnvironmentVariables"]
        if stage["action"] in ("commit", "image"):  # they publish, so they sign
            assert set(spec["phases"]) == {"install", "pre_build", "build"}
            assert spec["phases"]["pre_build"]["commands"] == [
                'export INVOKE_KILN_REPO_GPG_HOME="$(mktemp -d)"',
                f"invoke pipeline.key --app {APP} --import"]
            assert variables == [target, {"Name": "INVOKE_KILN_REPO_GPG_KEY",
                                          "Type": "PLAINTEXT",
                                          "Value": {"Ref": "RepoKeyFingerprint"}}]
        else:
            assert set(spec["phases"]) == {"install", "build"}
            assert variables == [target]


def test_only_the_signing_stages_read_the_signing_key_secret():
    """The private key is in the stack's secret, empty at creation, encrypted with the
    pipeline's key and readable by the roles of the stages that publish alone; nothing of it
    is in the template. An unsigned repository has no secret."""
    resources = rendered()["Resources"]
    secret = resources["SigningKey"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    assert set(secret["Properties"]) == {"Name", "Description", "KmsKeyId", "Tags"}
    assert secret["Properties"]["KmsKeyId"] == {"Fn::GetAtt": ["PipelineKey", "Arn"]}
    assert {"Key": "kiln:managed-by", "Value": "kiln"} in secret["Properties"]["Tags"]
    readers = {logical for logical, r in resources.items() if r["Type"] == "AWS::IAM::Role"
               and {"Ref": "SigningKey"} in [s["Resource"] for s in r["Properties"]["Policies"][0][
                   "PolicyDocument"]["Statement"]]}
    assert readers == {"CommitRole", "ImageRole"}
    read = next(s for s in resources["CommitRole"]["Properties"]["Policies"][0][
        "PolicyDocument"]["Statement"] if s["Resource"] == {"Ref": "SigningKey"})
    assert read["Action"] == "secretsmanager:GetSecretValue"
    unsigned = json.loads(codepipeline.template(engine_settings(repo={"sign": False}), APP))
    assert "SigningKey" not in unsigned["Resources"]
    assert "SigningKeySecretArn" not in unsigned["Outputs"]


@pytest.mark.parametrize("source", ["codecommit", "codeconnections"])
def test_a_repository_sources_build_installs_from_the_lock(source):
    """The repository's tree holds no wheelhouse: its builds install as `make setup` does, uv
    by its pinned hashes, then uv.lock's packages by theirs (the install phase failed there)."""
    resources = rendered(source)["Resources"]
    for resource in resources.values():
        if resource["Type"] != "AWS::CodeBuild::Project":
            continue
        install = yaml.safe_load(resource["Properties"]["Source"]["BuildSpec"])["phases"][
            "install"]["commands"]
        assert install[-4:] == codepipeline.INSTALL_FROM_LOCK
        assert not any("wheelhouse" in command for command in install)


def test_the_pipeline_has_the_apps_stages_with_an_approval_before_production():
    resources = rendered()["Resources"]
    pipeline = resources["Pipeline"]["Properties"]
    assert [s["Name"] for s in pipeline["Stages"]] == ["Source", *(s["name"] for s in STAGES)]
    approval = next(s for s in pipeline["Stages"] if s["Name"] == "approval")
    assert [(a["ActionTypeId"]["Category"], a["RunOrder"]) for a in approval["Actions"]] == [
        ("Approval", 1), ("Build", 2)]
    assert approval["Actions"][0]["Configuration"]["NotificationArn"] == {"Ref": "Topic"}
    # Packaging and baking run in the bake VPC's pipeline subnet; the later stages do not.
    image = next(r for r in resources.values() if r["Type"] == "AWS::CodeBuild::Project"
                 and r["Properties"]["Name"].endswith("-image"))["Properties"]
    assert image["VpcConfig"]["Subnets"] == [{"Ref": "PipelineSubnetId"}]
    staging = resources["StagingProject"]["Properties"]
    assert "VpcConfig" not in staging
    # Tagged at creation.
    for logical in ("Pipeline", "ArtifactBucket", "Topic", "ImageProject", "ImageRole"):
        assert {"Key": "kiln:managed-by", "Value": "kiln"} in \
            resources[logical]["Properties"]["Tags"], logical


def test_each_project_role_has_only_its_stages_statements():
    resources = rendered()["Resources"]

    def sids(logical: str) -> set[str]:
        statements = resources[logical]["Properties"]["Policies"][0]["PolicyDocument"][
            "Statement"]
        return {s["Sid"] for s in statements}

    assert "BakeAndShareImages" in sids("ImageRole")
    assert "BakeAndShareImages" not in sids("CommitRole") | sids("StagingRole")
    assert "ReachTargetAccounts" in sids("StagingRole")
    assert "ReachTargetAccounts" not in sids("CommitRole") | sids("ApprovalRole")
    assert "RepoObjects" not in sids("ProductionRole")
    # Acceptance keeps its JUnit report beside its record, and may put nothing else.
    assert "KeepItsReports" in sids("AcceptanceRole")
    assert "RepoObjects" not in sids("AcceptanceRole")



def test_a_capacity_stage_runs_its_load_test_from_the_bake_vpc():
    """A capacity stage, like acceptance, reaches a transient environment whose rule admits
    kiln.deploy.self_service.source_cidrs only (so from the pipeline subnet's NAT address), and
    keeps Locust's reports in the repository bucket."""
    stages = [*STAGES[:3], {"name": "capacity", "action": "capacity", "stack": "acceptance"},
              *STAGES[3:]]
    entry = engine_config()["apps"][APP]
    settings = engine_settings(apps={APP: {**entry, "pipeline": {**entry["pipeline"],
                                                                 "stages": stages}}})
    resources = json.loads(codepipeline.template(settings, APP))["Resources"]
    project = resources["CapacityProject"]["Properties"]
    assert project["VpcConfig"]["Subnets"] == [{"Ref": "PipelineSubnetId"}]
    statements = resources["CapacityRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"]
    assert {"ReachTargetAccounts", "KeepItsReports"} <= {s["Sid"] for s in statements}
    assert "RepoObjects" not in {s["Sid"] for s in statements}


@pytest.mark.parametrize("change, message", [
    ({"source": {"kind": "svn"}},
     "kiln.apps.hello-web.pipeline.source.kind: 'svn' is not one of s3, codecommit, "
     "codeconnections"),
    ({"source": {"kind": "codecommit"}},
     "kiln.apps.hello-web.pipeline.source.repository: a codecommit source needs it"),
    ({"stages": [s for s in STAGES if s["action"] != "approval"]},
     "kiln.apps.hello-web.pipeline.stages: engine codepipeline needs an approval stage before "
     "the production stage"),
    ({"engine": "local"}, "kiln.apps.hello-web.pipeline.source: only for engine codepipeline"),
    ({"stages": [*STAGES[:4], {"name": "explore", "action": "exploratory"}, *STAGES[4:]]},
     "kiln.apps.hello-web.pipeline.stages[4] (explore): engine codepipeline runs no exploratory "
     "stage: use an approval stage after a deploy stage, or the local engine"),
])
def test_a_wrong_engine_setting_is_one_line(change, message):
    entry = engine_config()["apps"][APP]
    with pytest.raises(ConfigError) as raised:
        engine_settings(apps={APP: {**entry, "pipeline": {**entry["pipeline"], **change}}})
    assert str(raised.value).endswith(message), raised.value


def test_the_deployer_roles_trust_the_pipelines_project_roles():
    ci = "arn:aws:iam::123456789012:role/kiln-ci"
    settings = engine_settings(bootstrap={"operator_principals": [ci]})
    place = bootstrap.Place(settings, "prod", None, None, "us-east-1")
    assert bootstrap.account_parameters(place)["OperatorPrincipals"] == \
        f"{ci},arn:aws:iam::123456789012:role/kiln-pipeline-{APP}-*"
    local = settings_module.validate(project_config(), ["test config"])
    assert bootstrap.pipeline_principals(local, "aws", "123456789012") == []
    # The pipeline subnet (and its NAT gateway) only while some app's pipeline needs it.
    assert bootstrap.pipeline_apps(settings) == [APP]
    assert bootstrap.pipeline_apps(local) == []


def test_bootstrap_dry_run_lists_the_pipeline_stack(clean_sandbox, kiln_settings, capsys):
    settings = kiln_settings(**engine_config())
    admin = connect(settings, admin=True)
    codepipeline.register(settings)
    parts = ("build", f"pipeline-{APP}")
    # A new account: the pipeline stack is planned after the build stack it reads.
    first = bootstrap.run(settings, admin, dry_run=True, parts=parts)
    assert [(r["stack"], r["action"], r.get("after")) for r in first] == [
        ("kiln-build", "planned", None), (f"kiln-pipeline-{APP}", "planned", "kiln-build")]
    assert (f"stack kiln-pipeline-{APP} in account build (123456789012): planned after stack "
            f"kiln-build (whose outputs are parameters of this one)") in capsys.readouterr().err
    # With the build stack (and its pipeline subnet): the change set of every resource.
    built = bootstrap.run(settings, admin, yes=True, parts=("build",))[0]["outputs"]
    assert built["PipelineSubnetId"].startswith("subnet-") and built["PipelineEgressIp"]
    second = bootstrap.run(settings, admin, dry_run=True, parts=(f"pipeline-{APP}",))
    added = {(c["logical_id"], c["type"]) for c in second[0]["changes"]}
    assert {("Pipeline", "AWS::CodePipeline::Pipeline"),
            ("ImageProject", "AWS::CodeBuild::Project"),
            ("ArtifactBucket", "AWS::S3::Bucket"), ("Topic", "AWS::SNS::Topic")} <= added
    assert f"stack kiln-pipeline-{APP} in account build (123456789012): create" in \
        capsys.readouterr().err
    summaries = admin.client("cloudformation").list_stacks()["StackSummaries"]
    assert [s["StackName"] for s in summaries if s["StackStatus"] != "DELETE_COMPLETE"] == [
        "kiln-build"]


def test_verify_reads_the_artifact_bucket_and_the_topic_as_they_are(clean_sandbox, kiln_settings):
    """The first app's pipeline added to a build stack made before it (which gains its
    pipeline subnet), then changed by hand."""
    plain = connect(kiln_settings(), admin=True)
    bootstrap.run(plain.settings, plain, yes=True, parts=("build",))
    settings = kiln_settings(**engine_config())
    admin = connect(settings, admin=True)
    parts = ("build", f"pipeline-{APP}")
    codepipeline.register(settings)
    assert [r["action"] for r in bootstrap.run(settings, admin, yes=True, parts=parts)] == [
        "updated", "created"]
    assert [c.problems for c in verify.run(settings, admin, parts=parts) if not c.ok] == []
    outputs = bootstrap.outputs(admin.client("cloudformation"), f"kiln-pipeline-{APP}")
    bucket, topic = outputs["ArtifactBucketName"], outputs["TopicArn"]
    # Changed by hand after bootstrap: each change is one line.
    s3, sns = admin.client("s3"), admin.client("sns")
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Sid": "Oops", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    sns.set_topic_attributes(TopicArn=topic, AttributeName="KmsMasterKeyId", AttributeValue="")
    found = [p for c in verify.run(settings, admin, parts=(f"pipeline-{APP}",)) for p in c.problems]
    assert found == [
        f"bucket {bucket}: policy statement Oops grants s3:GetObject to everyone (Principal *) "
        f"without a restricting condition",
        f"bucket {bucket}: versioning is Suspended",
        f"bucket {bucket}: no policy statement denies requests without TLS "
        f"(aws:SecureTransport false)",
        f"topic {topic}: encryption is off (no KmsMasterKeyId)"]


def test_status_without_a_pipeline_stack_shows_the_recorded_stages(clean_sandbox, kiln_settings,
                                                                    run_invoke, capsys):
    admin = connect(kiln_settings(), admin=True)
    bootstrap.run(admin.settings, admin, yes=True, parts=("build",))
    operator = connect(kiln_settings(**engine_config()))
    assert codepipeline.status(operator) is None  # no stack kiln-pipeline-hello-web
    capsys.readouterr()
    assert pipeline.status(operator)["stages"] == []
    assert capsys.readouterr().err.splitlines() == ["pipeline hello-web: no stage recorded yet"]
    run_invoke("pipeline.approve", "--version", "1.1.0", "--override", overrides=engine_config(),
               check=True)
    shown = run_invoke("pipeline.status", "--json", overrides=engine_config(), check=True)
    lines = shown.stderr.strip().splitlines()[-7:]
    assert lines[0] == "pipeline hello-web 1.1.0-1: stages as recorded"  # the manifest's release
    assert lines[1] == "  commit (commit, gate passed): not run"
    assert lines[5].startswith("  approval (approval, gate passed): passed "), lines
    assert lines[5].endswith("Z by kiln-operator"), lines
    assert json.loads(shown.stdout)["engine"] == "local"
    both = run_invoke("pipeline.run", "--version", "1.1.0", "--stage", "image", "--from",
                      "commit", overrides=engine_config())
    assert both.returncode == 4
    assert both.stderr.strip().splitlines()[-1] == \
        "kiln: pipeline.run: give --stage, or --from/--to, not both"
    dry = run_invoke("pipeline.run", "--version", "1.1.0", "--stage", "image", "--dry-run",
                     overrides=engine_config(), check=True)
    assert "  ▶ image (image, gate passed): not run; refused: commit not passed" in \
        dry.stderr.splitlines(), dry.stderr
    assert "    commit (commit, gate passed): not run" in dry.stderr.splitlines()


def wait_for(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


BUILD_ARN = "arn:aws:codebuild:us-east-1:310987654321:build/kiln-pipeline-hello-web-commit:1"


def test_a_build_endpoint_changes_nothing_for_the_aws_target(kiln_settings, monkeypatch):
    """In a CodeBuild build, target aws still refuses an AWS_ENDPOINT_URL it was not given and
    the sandbox's placeholder accounts: only the sandbox target uses the build's endpoint."""
    monkeypatch.setenv("CODEBUILD_BUILD_ARN", BUILD_ARN)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    accounts = {"build": {"id": "310987654321"}}
    with pytest.raises(KilnError, match="AWS_ENDPOINT_URL is set .*kiln.aws.endpoint_url"):
        connect(kiln_settings(target="aws", accounts=accounts))
    with pytest.raises(ConfigError, match="kiln.accounts.build.id: 123456789012 is the "
                                          "sandbox's placeholder"):
        kiln_settings(target="aws", accounts={"build": {"id": "123456789012"}})


def test_the_sandbox_target_in_another_build_starts_its_own_sandbox(kiln_settings,
                                                                    monkeypatch):
    """A CI job in AWS's CodeBuild that runs the sandbox: not a build of the sandbox's."""
    monkeypatch.setenv("CODEBUILD_BUILD_ARN", BUILD_ARN)
    monkeypatch.delenv("KILN_SANDBOX_TIME_SCALE", raising=False)
    assert isinstance(control.ensure_up(kiln_settings()), control.Sandbox)


def test_the_sandbox_target_in_a_build_bakes_over_the_sandbox_sshd(kiln_settings, monkeypatch):
    """In a sandbox build, Kiln's bake reaches its instance where the sandbox's CodeBuild says
    the sshd is, and waiters poll at the sandbox's pace; it starts nothing."""
    monkeypatch.setenv("CODEBUILD_BUILD_ARN", BUILD_ARN)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("KILN_SANDBOX_SSH", "builder@127.0.0.1:2222")
    monkeypatch.setenv("KILN_SANDBOX_TIME_SCALE", "0.01")
    settings = kiln_settings()
    assert isinstance(control.ensure_up(settings), control.BuildSandbox)
    assert (settings.bake.ssh_port, settings.bake.ssh_user, settings.bake.ssh_cidrs) == (
        2222, "builder", ["127.0.0.1/32"])
    assert settings.aws.waiter_delay == pytest.approx(0.15)


def test_the_source_archive_holds_the_tracked_files_and_the_wheels(tmp_path):
    wheel = tmp_path / "six-1.17.0-py2.py3-none-any.whl"
    wheel.write_bytes(b"a wheel")
    (tmp_path / "requirements.txt").write_text("six==1.17.0 --hash=sha256:0\n")
    names = zipfile.ZipFile(io.BytesIO(codepipeline.source_archive(
        ROOT, [tmp_path / "requirements.txt", wheel]))).namelist()
    assert {"tasks.py", "invoke.yaml", "uv.lock", "orchestrator/codepipeline.py",
            "wheelhouse/requirements.txt", f"wheelhouse/{wheel.name}"} <= set(names)
    assert not [n for n in names if n.startswith((".venv", ".sandbox/", "dist/"))]


def test_push_takes_an_s3_source_only(kiln_settings):
    settings = kiln_settings(**engine_config("codecommit"))
    with pytest.raises(KilnError, match="pipeline.source.kind: pipeline.push uploads to an s3 "
                                        "source"):
        codepipeline.push(Aws(settings, boto3.Session(), "build", "123456789012"), APP, ROOT)


SECRET = f"kiln-pipeline-{APP}/repo-signing-key"


def put_the_signing_key(run_invoke, settings, config: dict, tmp_path) -> None:
    """Before `invoke pipeline.key`, a build's import is refused in one line naming the secret
    and the task (as the admin here: the operator may put the key, not read it); after it, the
    secret holds the sandbox's signing key, never printed. `settings`: the test's own copy
    (its kiln.repo.gpg_home is changed)."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    # --dry-run writes nothing: the import below still finds the secret empty.
    dry = run_invoke("pipeline.key", "--dry-run", "--json", overrides=config, check=True)
    assert json.loads(dry.stdout)["secret"] == SECRET and json.loads(dry.stdout)["dry_run"]
    builder = connect(settings, admin=True)  # the sandbox's key: kiln.repo.gpg_key
    builder.settings.repo["gpg_home"] = str(home)  # a build's own, still empty
    with pytest.raises(KilnError) as empty:
        pipeline_key.import_key(builder, APP)
    assert str(empty.value) == (
        f"secret {SECRET}: no signing key in it yet: run `invoke pipeline.key --app {APP}` "
        f"where the repository's signing key (kiln.repo.gpg_key) is")
    put = run_invoke("pipeline.key", overrides=config, check=True)
    assert f"pipeline {APP}: signing key " in put.stderr
    assert f" put in secret {SECRET} (version " in put.stderr
    assert "PRIVATE KEY" not in put.stdout + put.stderr
    value = boto3.client("secretsmanager").get_secret_value(SecretId=SECRET)["SecretString"]
    assert value.startswith("-----BEGIN PGP PRIVATE KEY BLOCK-----")


def test_pipeline_key_puts_only_the_pinned_key(clean_sandbox, kiln_settings, tmp_path):
    """A key that is not the one the repository is pinned to is refused before anything is
    read or written: the builds would sign what every reader refuses."""
    home = tmp_path / "other-gnupg"
    home.mkdir(mode=0o700)
    subprocess.run(["gpg", "--batch", "--homedir", str(home), "--passphrase", "",
                    "--quick-gen-key", "Other <other@example.invalid>", "ed25519", "sign",
                    "never"], check=True, capture_output=True)
    try:
        other = signing.Signer("other@example.invalid", str(home)).fingerprint()
        pinned = "A" * 40
        settings = kiln_settings(**engine_config(), repo={
            "gpg_home": str(home), "gpg_key": other, "key_fingerprint": pinned})
        with pytest.raises(KilnError) as refused:
            pipeline_key.put(connect(settings), APP)
        assert str(refused.value) == (
            f"kiln.repo.gpg_key: {other} is key {other}, but the repository is pinned to "
            f"{pinned}: the builds would sign what every reader refuses; name that key, or run "
            f"`invoke bootstrap` to record the new one")
        unsigned = kiln_settings(**engine_config(), repo={"sign": False})
        with pytest.raises(KilnError, match="kiln.repo.sign: false, so the pipeline's builds "
                                            "sign nothing"):
            pipeline_key.put(connect(unsigned), APP)
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={"GNUPGHOME": str(home)},
                       check=False, capture_output=True)


def s3_repo_object(settings, name: str) -> bytes:
    bucket = stacks.output(connect(settings), "build", "RepoBucket")
    return boto3.client("s3").get_object(
        Bucket=bucket, Key=f"{settings.repo.prefix}/{name}")["Body"].read()


@pytest.mark.slow
def test_the_generated_pipeline_runs_in_the_sandbox(clean_sandbox, kiln_settings, run_invoke,
                                                    tmp_path):
    """bootstrap's stack kiln-pipeline-<app> runs a commit of the app, its builds installing
    Kiln from the source's wheelhouse alone (a sandbox build reaches no package index) and
    using the AWS they run in: the commit stage's build imports the repository's signing key
    from the stack's secret (`invoke pipeline.key` put it there), packages, signs and publishes
    1.1.0; the image stage's build bakes it with chef-solo on a sandbox instance from the signed
    repository (the deploy account is the build account here: no promotion); the execution
    waits at its manual approval, which `invoke pipeline.approve --version 1.1.0` answers; the
    approval stage's build then finds Kiln's record and the execution succeeds.
    `invoke pipeline.status` reads the live pipeline. The source is the default, an object in
    the artifact bucket, which takes requests over TLS only: Kiln uploads it over the sandbox's
    TLS endpoint, as the operator, tagged at creation; `invoke pipeline.push` does the same."""
    config = engine_config()
    config["deploy"] = {"account": "build"}
    config["apps"][APP]["pipeline"].update(
        stages=[{"name": "commit", "action": "commit"}, {"name": "image", "action": "image"},
                {"name": "approval", "action": "approval"}],
        source={"kind": "s3"})
    settings = kiln_settings(**config)
    codepipeline.register(settings)
    bootstrap.run(settings, connect(settings, admin=True), yes=True,
                  parts=("build", "operator", f"pipeline-{APP}"))
    put_the_signing_key(run_invoke, kiln_settings(**config), config, tmp_path)
    pipelines, name = boto3.client("codepipeline"), f"kiln-pipeline-{APP}"
    # The new source object starts an execution (the stack's rule) of the manifest's version;
    # this test's, of 1.1.0, supersedes it at the commit stage's transition, held meanwhile.
    pipelines.disable_stage_transition(pipelineName=name, stageName="commit",
                                       transitionType="Inbound", reason="1.1.0 first")
    # As pipeline.push uploads, with the archive carrying this test's settings.
    operator = connect(settings)
    bucket = stacks.output(operator, f"pipeline-{APP}", "ArtifactBucketName")
    source = codepipeline.upload(operator, APP, bucket, f"source/{APP}.zip",
                                 source_with_config(config))
    assert source_tags(bucket, source) == {"kiln:managed-by": "kiln", "kiln:app": APP,
                                           "kiln:role": "pipeline-source"}
    [from_rule] = wait_for(lambda: executions_from_the_rule(pipelines, name),
                           "the execution the new source object starts")
    started = pipelines.start_pipeline_execution(name=name, variables=[
        {"name": "KILN_VERSION", "value": "1.1.0"}])["pipelineExecutionId"]
    wait_for(lambda: pipelines.get_pipeline_execution(
        pipelineName=name, pipelineExecutionId=from_rule["pipelineExecutionId"])[
        "pipelineExecution"]["status"] == "Superseded", "1.1.0 to supersede it")
    pipelines.enable_stage_transition(pipelineName=name, stageName="commit",
                                      transitionType="Inbound")

    def approve_state() -> dict:
        stage = pipelines.get_pipeline_state(name=name)["stageStates"][3]
        return stage["actionStates"][0].get("latestExecution") or {}

    def execution() -> dict:
        return pipelines.get_pipeline_execution(
            pipelineName=name, pipelineExecutionId=started)["pipelineExecution"]

    def build_log(stage: str) -> str:
        logs, group = boto3.client("logs"), f"/kiln/pipeline/{APP}"
        streams = logs.describe_log_streams(logGroupName=group,
                                            logStreamNamePrefix=f"{stage}/")["logStreams"]
        return "\n".join(e["message"] for found in streams for e in logs.get_log_events(
            logGroupName=group, logStreamName=found["logStreamName"])["events"])

    def failure(stage: str) -> str:
        actions = pipelines.list_action_executions(pipelineName=name, filter={
            "pipelineExecutionId": started})["actionExecutionDetails"]
        return "\n".join([*(f"{a['stageName']}.{a['actionName']}: {a['status']} "
                             f"{a.get('output', {}).get('executionResult', {})}"
                             for a in actions), build_log(stage)])

    wait_for(lambda: approve_state().get("token") or execution()["status"] == "Failed",
             "the commit stage", timeout=300)
    assert execution()["status"] == "InProgress", failure("commit")
    commit_log = build_log("commit")
    assert "[1/1] stage commit: passed in " in commit_log
    fingerprint = connect(settings).settings.repo.gpg_key
    assert f"signing key {fingerprint} imported from secret {SECRET}" in commit_log
    assert "PRIVATE KEY" not in commit_log
    repomd = s3_repo_object(settings, "repodata/repomd.xml.asc")
    assert repomd.startswith(b"-----BEGIN PGP SIGNATURE-----")
    image_log = build_log("image")
    assert "hello-web-1.1.0-1.noarch is already in the repo" in image_log  # the commit's
    assert "bake: verified hello-web-1.1.0-1 and 1 smoke check(s)" in image_log
    assert "[1/1] stage image: passed in " in image_log
    baked = boto3.client("ec2").describe_images(Owners=["self"], Filters=kiln_tags.filters(
        {kiln_tags.APP: APP, kiln_tags.VERSION: "1.1.0"}))["Images"]
    assert [kiln_tags.from_list(i["Tags"])["kiln:stage:image"][:7] for i in baked] == ["passed "]
    approved = run_invoke("pipeline.approve", "--version", "1.1.0", overrides=config, check=True)
    assert f"pipeline {name}: approval at stage approval answered" in approved.stderr
    assert approve_state()["status"] == "Succeeded"
    assert approve_state()["summary"] == \
        "1.1.0-1 approved by arn:aws:iam::123456789012:user/kiln-operator"
    wait_for(lambda: execution()["status"] != "InProgress", "the approval stage", timeout=300)
    assert execution()["status"] == "Succeeded", failure("approval")
    shown = run_invoke("pipeline.status", "--json", overrides=config, check=True)
    live = json.loads(shown.stdout)
    assert live["engine"] == "codepipeline" and live["pipeline"] == name
    assert live["stages"][3]["actions"][0] == {
        "action": "approve", "status": "Succeeded", "summary": approve_state()["summary"]}
    # Ours (newest) succeeded; the source object's was superseded; the one CodePipeline
    # started when the pipeline was made failed on the source, which was not there yet.
    assert [e["status"] for e in live["executions"]] == ["Succeeded", "Superseded", "Failed"]
    # `invoke pipeline.push` (this checkout as it is; the lock's wheels kept in dist/) puts a
    # new version of the source, tagged, which starts an execution (held and stopped here).
    pipelines.disable_stage_transition(pipelineName=name, stageName="commit",
                                       transitionType="Inbound", reason="no second run")
    pushed = run_invoke("pipeline.push", "--json", check=True,
                        overrides={**config, "dist": str(ROOT / "dist")})
    found = json.loads(pushed.stdout)
    assert (found["bucket"], found["key"]) == (bucket, f"source/{APP}.zip")
    assert found["version_id"] not in (None, source["version_id"])
    assert source_tags(bucket, found)["kiln:role"] == "pipeline-source"
    pushed_run = wait_for(lambda: [e for e in executions_from_the_rule(pipelines, name)
                                   if e["pipelineExecutionId"] != from_rule[
                                       "pipelineExecutionId"]], "the push's execution")[0]
    pipelines.stop_pipeline_execution(pipelineName=name, reason="seen", abandon=True,
                                      pipelineExecutionId=pushed_run["pipelineExecutionId"])


def stop_if_running(pipelines, name: str, execution_id: str) -> None:
    """Stop an execution unless it has ended meanwhile (the next one may supersede it at any
    moment, as on CodePipeline, which then refuses the stop)."""
    try:
        pipelines.stop_pipeline_execution(pipelineName=name, reason="seen",
                                          pipelineExecutionId=execution_id)
    except pipelines.exceptions.PipelineExecutionNotStoppableException:
        assert execution_status(pipelines, name, {"pipelineExecutionId": execution_id}) != \
            "InProgress"


def execution_status(pipelines, name: str, found: dict) -> str:
    return pipelines.get_pipeline_execution(
        pipelineName=name, pipelineExecutionId=found["pipelineExecutionId"])[
        "pipelineExecution"]["status"]


def executions_from_the_rule(pipelines, name: str) -> list[dict]:
    """The executions the stack's StartRule started (a new source object's event)."""
    return [e for e in pipelines.list_pipeline_executions(pipelineName=name)[
        "pipelineExecutionSummaries"] if e["trigger"]["triggerType"] == "CloudWatchEvent"]


def source_tags(bucket: str, source: dict) -> dict:
    """The tags of the source's object version, but its run id (one per push)."""
    found = boto3.client("s3").get_object_tagging(Bucket=bucket, Key=source["key"],
                                                  VersionId=source["version_id"])["TagSet"]
    tags = {t["Key"]: t["Value"] for t in found}
    assert tags.pop("kiln:run-id")
    return tags


def test_a_new_source_object_starts_the_generated_pipeline_through_its_rule(clean_sandbox,
                                                                          kiln_settings):
    """The artifact bucket sends S3's "Object Created" events to EventBridge (its
    NotificationConfiguration); the stack's StartRule matches a new version of the source
    object (a put, or a copy onto it) and starts the pipeline as its StartRole: the execution's
    trigger is the rule, with no StartPipelineExecution. A role that may not start the pipeline,
    or that EventBridge may not assume, starts nothing: the rule's FailedInvocations metric
    counts the events, as on AWS. The commit stage's inbound transition
    is disabled: no build runs here."""
    config = engine_config()
    config["deploy"] = {"account": "build"}
    config["apps"][APP]["pipeline"].update(stages=[{"name": "commit", "action": "commit"}],
                                           source={"kind": "s3"})
    settings = kiln_settings(**config)
    codepipeline.register(settings)
    bootstrap.run(settings, connect(settings, admin=True), yes=True,
                  parts=("build", "operator", f"pipeline-{APP}"))
    pipelines, name = boto3.client("codepipeline"), f"kiln-pipeline-{APP}"
    pipelines.disable_stage_transition(pipelineName=name, stageName="commit",
                                       transitionType="Inbound", reason="no build here")
    operator = connect(settings)
    bucket = stacks.output(operator, f"pipeline-{APP}", "ArtifactBucketName")
    resources = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in boto3.client(
        "cloudformation").list_stack_resources(StackName=name)["StackResourceSummaries"]}

    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("README", "a commit\n")
    key = f"source/{APP}.zip"
    codepipeline.upload(operator, APP, bucket, key, package.getvalue())
    [started] = wait_for(lambda: executions_from_the_rule(pipelines, name),
                         "the execution the new source object starts")
    assert started["trigger"]["triggerDetail"] == \
        f"arn:aws:events:us-east-1:123456789012:rule/{resources['StartRule']}"
    # A copy onto the source key is a new object too (CopyObject's "Object Created").
    boto3.client("s3").copy_object(Bucket=bucket, Key=key, MetadataDirective="REPLACE",
                                   CopySource={"Bucket": bucket, "Key": key})
    copied = wait_for(lambda: [e for e in executions_from_the_rule(pipelines, name)
                               if e["pipelineExecutionId"] != started["pipelineExecutionId"]],
                      "the execution the copy starts")
    for found in (started, *copied):  # held at the transition, one superseded by the next
        stop_if_running(pipelines, name, found["pipelineExecutionId"])

    # The rule's role loses the right to start this pipeline: the next object starts nothing;
    # given it back, but trusting another service than EventBridge: nothing either.
    iam, role = boto3.client("iam"), resources["StartRole"]
    pipeline_arn = f"arn:aws:codepipeline:us-east-1:123456789012:{name}"
    for resource, service in ((f"{pipeline_arn}-another", "events.amazonaws.com"),
                              (pipeline_arn, "codebuild.amazonaws.com")):
        iam.put_role_policy(RoleName=role, PolicyName="start", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": "codepipeline:StartPipelineExecution",
                "Resource": resource}]}))
        iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": service},
                "Action": "sts:AssumeRole"}]}))
        codepipeline.upload(operator, APP, bucket, key, package.getvalue())
    failed = boto3.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/Events", MetricName="FailedInvocations",
        Dimensions=[{"Name": "RuleName", "Value": resources["StartRule"]}],
        StartTime=time.time() - 3600, EndTime=time.time() + 60, Period=3600,
        Statistics=["Sum"])["Datapoints"]
    assert [d["Sum"] for d in failed] == [2.0]
    assert len(executions_from_the_rule(pipelines, name)) == 2
