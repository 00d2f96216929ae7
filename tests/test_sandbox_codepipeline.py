"""sandbox/aws/codepipeline and sandbox/aws/codebuild: a pipeline made through CloudFormation
runs as on AWS. Its build runs the buildspec on a sandbox machine with the project's variables
and its role's credentials, logs to CloudWatch Logs, and the manual approval waits for
PutApprovalResult; a failed build fails the execution; a disabled transition holds it."""

from __future__ import annotations

import io
import json
import time
import zipfile

import boto3
import pytest

GREETING = "hello-from-the-project"


def buildspec(command: str) -> str:
    return "\n".join([
        "version: 0.2",
        "env:",
        "  variables:",
        "    STAGE: build",
        "phases:",
        "  build:",
        "    commands:",
        '      - echo "greeting=$GREETING stage=$STAGE on $(. /etc/os-release; echo $NAME)"',
        f"      - {json.dumps(command)}",
        "      - mkdir -p out && cat app.txt > out/result.txt && echo built >> out/result.txt",
        "  post_build:",
        "    commands:",
        "      - echo post_build succeeding=$CODEBUILD_BUILD_SUCCEEDING",
        "artifacts:",
        "  files:",
        "    - out/result.txt",
    ])


# The build calls the sandbox's STS with its own credentials, as the AWS CLI would.
WHO_AM_I = ('curl -sf --aws-sigv4 "aws:amz:$AWS_REGION:sts" '
            '--user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" '
            '-H "x-amz-security-token: $AWS_SESSION_TOKEN" '
            '-d "Action=GetCallerIdentity&Version=2011-06-15" "$AWS_ENDPOINT_URL/"')


# A build reaches the instances' SSH (in the sandbox, its sshd), as a build in a VPC does.
SSH_BANNER = 'echo "sshd: $(head -c 7 < /dev/tcp/127.0.0.1/${KILN_SANDBOX_SSH##*:})"'


def allow(actions, resources) -> dict:
    return {"Effect": "Allow", "Action": actions, "Resource": resources}


def role(service: str, statements: list, condition: dict | None = None) -> dict:
    trust = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    if condition:
        trust["Condition"] = condition
    return {"Type": "AWS::IAM::Role", "Properties": {
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [trust]},
        "Policies": [{"PolicyName": "least", "PolicyDocument": {
            "Version": "2012-10-17", "Statement": statements}}]}}


def template(command: str, poll: bool = False, can_build: bool = True) -> str:
    artifacts = {"Fn::Sub": "${Artifacts.Arn}/*"}
    source = {"Fn::Sub": "${Source.Arn}/*"}
    project = {"Fn::GetAtt": ["Project", "Arn"]}
    stages = [
        {"Name": "Source", "Actions": [{
            "Name": "Fetch", "ActionTypeId": {"Category": "Source", "Owner": "AWS",
                                              "Provider": "S3", "Version": "1"},
            "Configuration": {"S3Bucket": {"Ref": "Source"}, "S3ObjectKey": "app.zip",
                              "PollForSourceChanges": poll},
            "OutputArtifacts": [{"Name": "Code"}]}]},
        {"Name": "Build", "Actions": [{
            "Name": "Compile", "ActionTypeId": {"Category": "Build", "Owner": "AWS",
                                                "Provider": "CodeBuild", "Version": "1"},
            "Configuration": {"ProjectName": {"Ref": "Project"}},
            "InputArtifacts": [{"Name": "Code"}], "OutputArtifacts": [{"Name": "Built"}],
            "RunOrder": 1}]},
        {"Name": "Release", "Actions": [{
            "Name": "Approve", "ActionTypeId": {"Category": "Approval", "Owner": "AWS",
                                                "Provider": "Manual", "Version": "1"},
            "Configuration": {"NotificationArn": {"Ref": "Topic"},
                              "CustomData": f"after {command}"}}]},
    ]
    return json.dumps({"Resources": {
        "Artifacts": {"Type": "AWS::S3::Bucket"},
        "Source": {"Type": "AWS::S3::Bucket", "Properties": {
            "VersioningConfiguration": {"Status": "Enabled"}}},
        "Topic": {"Type": "AWS::SNS::Topic"},
        "PipelineRole": role("codepipeline.amazonaws.com", [
            allow(["s3:GetObject", "s3:GetObjectVersion"], [source, artifacts]),
            allow("s3:PutObject", artifacts),
            allow(["codebuild:StartBuild", "codebuild:BatchGetBuilds"] if can_build
                  else ["codebuild:BatchGetBuilds"], project),
            allow("sns:Publish", {"Ref": "Topic"})]),
        "BuildRole": role("codebuild.amazonaws.com", [
            allow(["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"], "*"),
            allow(["s3:GetObject", "s3:PutObject"], artifacts)],
            # The confused deputy's guard: CodeBuild says which project it assumes the role for.
            {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
             "ArnLike": {"aws:SourceArn": {"Fn::Sub": "arn:${AWS::Partition}:codebuild:"
                                                      "${AWS::Region}:${AWS::AccountId}:project/*"}}}),
        "Project": {"Type": "AWS::CodeBuild::Project", "Properties": {
            "ServiceRole": {"Fn::GetAtt": ["BuildRole", "Arn"]},
            "Source": {"Type": "CODEPIPELINE", "BuildSpec": buildspec(command)},
            "Artifacts": {"Type": "CODEPIPELINE"},
            "Environment": {"Type": "LINUX_CONTAINER", "ComputeType": "BUILD_GENERAL1_SMALL",
                            "Image": "aws/codebuild/amazonlinux-x86_64-standard:5.0",
                            "EnvironmentVariables": [{"Name": "GREETING",
                                                      "Value": GREETING}]}}},
        "Pipeline": {"Type": "AWS::CodePipeline::Pipeline", "Properties": {
            "RoleArn": {"Fn::GetAtt": ["PipelineRole", "Arn"]},
            "ArtifactStore": {"Type": "S3", "Location": {"Ref": "Artifacts"}},
            "Stages": stages}}},
        "Outputs": {name: {"Value": {"Ref": name}}
                    for name in ("Pipeline", "Project", "Source", "Artifacts")}})


def make_pipeline(command: str, **options) -> dict:
    """The stack, and the source object in place; its outputs."""
    cfn = boto3.client("cloudformation")
    # Through a change set, as `invoke bootstrap` makes every stack.
    cfn.create_change_set(StackName="kiln-pipeline-demo", ChangeSetName="create",
                          ChangeSetType="CREATE", TemplateBody=template(command, **options),
                          Capabilities=["CAPABILITY_IAM"])
    cfn.get_waiter("change_set_create_complete").wait(
        StackName="kiln-pipeline-demo", ChangeSetName="create",
        WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    cfn.execute_change_set(StackName="kiln-pipeline-demo", ChangeSetName="create")
    stack = cfn.describe_stacks(StackName="kiln-pipeline-demo")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("app.txt", "source of the app\n")
    boto3.client("s3").put_object(Bucket=outputs["Source"], Key="app.zip",
                                  Body=package.getvalue())
    return outputs


def wait_for(check, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def execution(pipelines, name: str, execution_id: str) -> dict:
    return pipelines.get_pipeline_execution(pipelineName=name,
                                            pipelineExecutionId=execution_id)[
        "pipelineExecution"]


def finished(pipelines, name: str, execution_id: str):
    found = execution(pipelines, name, execution_id)
    return found if found["status"] != "InProgress" else None


def action_state(pipelines, name: str, stage: str, action: str) -> dict:
    states = pipelines.get_pipeline_state(name=name)["stageStates"]
    stage_state = next(s for s in states if s["stageName"] == stage)
    return next(a for a in stage_state["actionStates"] if a["actionName"] == action)


@pytest.fixture
def pipelines(clean_sandbox):
    clean_sandbox.set_time_scale(None)  # the default: CodeBuild's queue is milliseconds here
    return boto3.client("codepipeline")


def test_a_pipeline_builds_on_a_machine_and_waits_for_its_approval(pipelines, clean_sandbox):
    outputs = make_pipeline(f"{WHO_AM_I} && {SSH_BANNER}")
    name = outputs["Pipeline"]
    # As on AWS, the new pipeline ran at once, and found no source object yet.
    [first] = pipelines.list_pipeline_executions(pipelineName=name)[
        "pipelineExecutionSummaries"]
    assert first["trigger"]["triggerType"] == "CreatePipeline"
    assert wait_for(lambda: finished(pipelines, name, first["pipelineExecutionId"]),
                    "the first execution")["status"] == "Failed"

    started = pipelines.start_pipeline_execution(name=name)["pipelineExecutionId"]
    approve = wait_for(lambda: action_state(pipelines, name, "Release", "Approve").get(
        "latestExecution", {}).get("token"), "the approval")
    assert execution(pipelines, name, started)["status"] == "InProgress"
    time.sleep(0.5)  # it waits for the answer, however long
    assert execution(pipelines, name, started)["status"] == "InProgress"

    builds = boto3.client("codebuild")
    [build_id] = builds.list_builds_for_project(projectName=outputs["Project"])["ids"]
    [build] = builds.batch_get_builds(ids=[build_id])["builds"]
    assert build["buildStatus"] == "SUCCEEDED" and build["initiator"] == f"codepipeline/{name}"
    assert [p["phaseType"] for p in build["phases"]] == [
        "SUBMITTED", "QUEUED", "PROVISIONING", "DOWNLOAD_SOURCE", "INSTALL", "PRE_BUILD",
        "BUILD", "POST_BUILD", "UPLOAD_ARTIFACTS", "FINALIZING", "COMPLETED"]
    log = boto3.client("logs").get_log_events(logGroupName=f"/aws/codebuild/{outputs['Project']}",
                                              logStreamName=build_id.partition(":")[2])
    text = "\n".join(e["message"] for e in log["events"])
    assert f"greeting={GREETING} stage=build on Amazon Linux" in text
    assert f"assumed-role/{build['serviceRole'].rpartition('/')[2]}/" in text  # its own creds
    assert "post_build succeeding=1" in text
    assert "sshd: SSH-2.0" in text
    machines = clean_sandbox.state_dir / "machines" / "instances"
    assert not list(machines.glob("codebuild-*"))  # its machine ended with it

    [built] = [a for a in pipelines.list_action_executions(
        pipelineName=name, filter={"pipelineExecutionId": started})["actionExecutionDetails"]
        if a["actionName"] == "Compile"]
    assert built["status"] == "Succeeded" and built["output"]["executionResult"][
        "externalExecutionId"] == build_id
    where = built["output"]["outputArtifacts"][0]["s3location"]
    body = boto3.client("s3").get_object(Bucket=where["bucket"], Key=where["key"])["Body"]
    with zipfile.ZipFile(io.BytesIO(body.read())) as archive:
        assert archive.read("out/result.txt") == b"source of the app\nbuilt\n"

    pipelines.put_approval_result(pipelineName=name, stageName="Release", actionName="Approve",
                                  result={"summary": "ship it", "status": "Approved"},
                                  token=approve)
    done = wait_for(lambda: finished(pipelines, name, started), "the execution")
    assert done["status"] == "Succeeded"
    states = pipelines.get_pipeline_state(name=name)["stageStates"]
    assert [s["latestExecution"] for s in states] == [
        {"pipelineExecutionId": started, "status": "Succeeded"}] * 3


def test_a_disabled_transition_holds_an_execution_and_a_failed_build_fails_it(pipelines):
    outputs = make_pipeline("exit 3")
    name, builds = outputs["Pipeline"], boto3.client("codebuild")
    pipelines.disable_stage_transition(pipelineName=name, stageName="Build",
                                       transitionType="Inbound", reason="freeze")
    started = pipelines.start_pipeline_execution(name=name)["pipelineExecutionId"]

    def held():
        states = pipelines.get_pipeline_state(name=name)["stageStates"]
        return states[1].get("inboundExecution", {}).get("pipelineExecutionId") == started

    wait_for(held, "the execution at the disabled transition")
    time.sleep(0.3)
    assert held() and execution(pipelines, name, started)["status"] == "InProgress"
    assert builds.list_builds_for_project(projectName=outputs["Project"])["ids"] == []
    transition = pipelines.get_pipeline_state(name=name)["stageStates"][1][
        "inboundTransitionState"]
    assert transition["enabled"] is False and transition["disabledReason"] == "freeze"

    pipelines.enable_stage_transition(pipelineName=name, stageName="Build",
                                      transitionType="Inbound")
    done = wait_for(lambda: finished(pipelines, name, started), "the execution")
    assert done["status"] == "Failed"
    compile_state = action_state(pipelines, name, "Build", "Compile")["latestExecution"]
    assert compile_state["status"] == "Failed"
    assert "Phase: BUILD, Code: COMMAND_EXECUTION_ERROR" in compile_state["errorDetails"][
        "message"]
    assert "latestExecution" not in action_state(pipelines, name, "Release", "Approve")
    [build_id] = builds.list_builds_for_project(projectName=outputs["Project"])["ids"]
    [build] = builds.batch_get_builds(ids=[build_id])["builds"]
    statuses = {p["phaseType"]: p.get("phaseStatus") for p in build["phases"]}
    assert build["buildStatus"] == "FAILED" and statuses["BUILD"] == "FAILED"
    assert statuses["POST_BUILD"] == "SUCCEEDED"  # as on AWS, post_build runs after a failure
    log = boto3.client("logs").get_log_events(logGroupName=f"/aws/codebuild/{outputs['Project']}",
                                              logStreamName=build_id.partition(":")[2])
    assert "post_build succeeding=0" in "\n".join(e["message"] for e in log["events"])


def test_a_new_source_version_starts_a_polling_pipeline_whose_role_is_checked(pipelines):
    """No machine: the pipeline's role may not start the build, and the last execution is
    stopped before it."""
    outputs = make_pipeline("true", poll=True, can_build=False)  # its role may not StartBuild
    name = outputs["Pipeline"]

    def polled():
        return [e for e in pipelines.list_pipeline_executions(pipelineName=name)[
            "pipelineExecutionSummaries"] if e["trigger"]["triggerType"] == "PollForSourceChanges"]

    [execution_summary] = wait_for(polled, "the execution the new source version starts")
    started = execution_summary["pipelineExecutionId"]
    assert wait_for(lambda: finished(pipelines, name, started), "the execution")[
        "status"] == "Failed"
    compile_state = action_state(pipelines, name, "Build", "Compile")["latestExecution"]
    assert "is not authorized to perform: codebuild:StartBuild" in compile_state[
        "errorDetails"]["message"]
    assert boto3.client("codebuild").list_builds_for_project(
        projectName=outputs["Project"])["ids"] == []

    # Held at a disabled transition, an execution stops there when asked to.
    pipelines.disable_stage_transition(pipelineName=name, stageName="Build",
                                       transitionType="Inbound", reason="hold")
    held = pipelines.start_pipeline_execution(name=name)["pipelineExecutionId"]
    wait_for(lambda: pipelines.get_pipeline_state(name=name)["stageStates"][1].get(
        "inboundExecution"), "the held execution")
    pipelines.stop_pipeline_execution(pipelineName=name, pipelineExecutionId=held,
                                      reason="not today")
    stopped = wait_for(lambda: finished(pipelines, name, held) if execution(
        pipelines, name, held)["status"] != "Stopping" else None, "the stop")
    assert stopped["status"] == "Stopped" and stopped["statusSummary"] == "not today"
    assert "inboundExecution" not in pipelines.get_pipeline_state(name=name)["stageStates"][1]

    # A stack update changes the pipeline (a new version) and the project in place.
    boto3.client("cloudformation").update_stack(
        StackName="kiln-pipeline-demo", Capabilities=["CAPABILITY_IAM"],
        TemplateBody=template("echo changed", poll=True, can_build=False))
    changed = pipelines.get_pipeline(name=name)["pipeline"]
    assert changed["version"] == 2
    assert changed["stages"][2]["actions"][0]["configuration"]["CustomData"] == "after echo changed"
    [project] = boto3.client("codebuild").batch_get_projects(names=[outputs["Project"]])[
        "projects"]
    assert "echo changed" in project["source"]["buildspec"]


def test_pipeline_variables_and_action_namespaces_resolve(pipelines):
    """No machine: a V2 pipeline's variables (a default, or the value StartPipelineExecution
    gives) and a source action's output variables resolve in a later action's configuration."""
    cfn, s3 = boto3.client("cloudformation"), boto3.client("s3")
    body = json.loads(template("true"))
    shape = body["Resources"]["Pipeline"]["Properties"]
    shape.update({"PipelineType": "V2", "Variables": [
        {"Name": "KILN_VERSION", "DefaultValue": "1.0.0"}]})
    shape["Stages"][0]["Actions"][0]["Namespace"] = "source"
    shape["Stages"][1:2] = []  # no build: the approval follows the source
    shape["Stages"][1]["Actions"][0]["Configuration"]["CustomData"] = \
        "release #{variables.KILN_VERSION} of #{source.ObjectKey}"
    cfn.create_stack(StackName="kiln-pipeline-demo", TemplateBody=json.dumps(body),
                     Capabilities=["CAPABILITY_IAM"])
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(
        StackName="kiln-pipeline-demo")["Stacks"][0]["Outputs"]}
    name = outputs["Pipeline"]
    s3.put_object(Bucket=outputs["Source"], Key="app.zip", Body=b"PK\x05\x06" + b"\0" * 18)

    given = pipelines.start_pipeline_execution(
        name=name, variables=[{"name": "KILN_VERSION", "value": "2.1.0"}])["pipelineExecutionId"]
    assert execution(pipelines, name, given)["variables"] == [
        {"name": "KILN_VERSION", "resolvedValue": "2.1.0"}]
    wait_for(lambda: action_state(pipelines, name, "Release", "Approve").get(
        "latestExecution", {}).get("token"), "the approval")
    [approve] = [a for a in pipelines.list_action_executions(
        pipelineName=name, filter={"pipelineExecutionId": given})["actionExecutionDetails"]
        if a["actionName"] == "Approve"]
    assert approve["input"]["resolvedConfiguration"]["CustomData"] == "release 2.1.0 of app.zip"
    assert approve["input"]["configuration"]["CustomData"].startswith("release #{variables.")

    defaulted = pipelines.start_pipeline_execution(name=name)["pipelineExecutionId"]
    assert execution(pipelines, name, defaulted)["variables"] == [
        {"name": "KILN_VERSION", "resolvedValue": "1.0.0"}]
