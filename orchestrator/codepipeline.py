"""An app's release pipeline on AWS CodePipeline and CodeBuild: the stack kiln-pipeline-<app>.

For each app whose pipeline says `engine: codepipeline` (cloud/pipelines.py), `invoke bootstrap`
makes, in the build account, through a change set like every other stack:

- a CodePipeline (V2): a source action (an S3 object, a CodeCommit branch or a CodeConnections
  repository), then one stage per stage of the app's pipeline, each a CodeBuild action running
  the same `invoke pipeline.run --stage NAME` a laptop runs; the approval stage is a manual
  approval action, then its CodeBuild action, which passes once `invoke pipeline.approve` was
  given (the approver's own identity recorded, as on a laptop);
- a CodeBuild project per stage, whose buildspec Kiln generates here (never the user's): Kiln
  installed from its lock file, then the stage's command. The commit and image stages run in the
  build account's bake VPC (its private pipeline subnet); the later stages reach the target
  accounts through their deployer roles;
- with a signed repository, a secret the stages that publish (commit, image) import its signing
  key from, put there by `invoke pipeline.key` (orchestrator/pipeline_key.py);
- an artifact bucket (versioned, encrypted with the pipeline's key, public access blocked,
  TLS only), an SNS topic for approvals and failures (an EventBridge rule on failed executions),
  the pipeline's log group, and a role for the pipeline and one per project, each allowed only
  what its stage does (the operator policy's statements that stage needs).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import subprocess
import zipfile
from pathlib import Path
from urllib.parse import urlencode

import yaml

from accounts import bootstrap, verify
from cloud import apps, pipelines, stacks, tags
from cloud.console import say
from cloud.errors import KilnError
from orchestrator import pipeline_checks

PART = "pipeline-{app}"
OUTPUTS = ("PipelineName", "ArtifactBucketName", "TopicArn", "LogGroupName",
           "SigningKeySecretArn")
IMAGE = "aws/codebuild/amazonlinux-x86_64-standard:5.0"  # Amazon Linux 2023
VERSION_VARIABLE = "KILN_VERSION"
# The stages that run inside the build account's bake VPC: packaging and baking, and the
# acceptance command and the capacity stage's load test, whose requests must come from one of
# kiln.deploy.self_service.source_cidrs (the pipeline subnet's NAT address, the build stack's
# PipelineEgressIp).
IN_BAKE_VPC = ("commit", "image", "acceptance", "capacity")
# The operator policy's statements (cloud/policies/operator.json, by Sid) each stage's project
# needs beside the ledger's; nothing else.
LEDGER = ("ReadStacksAndWhoAmI", "Locks", "History", "PipelineNotices")
STATEMENTS = {
    "commit": ("RepoBucketReadWrite", "RepoObjects"),
    "image": ("RepoBucketReadWrite", "RepoObjects", "BakeLogs", "DescribeLogGroups",
              "BakeAndShareImages", "PassTheBakeRole", "ReadKilnRoles", "UseTheAmiKeys",
              "ListKeyAliases", "BaseImageParameter", "ReachTargetAccounts"),
    "acceptance": ("ReachTargetAccounts",),
    "capacity": ("ReachTargetAccounts",),
    "deploy": ("ReachTargetAccounts",),
    "approval": (),
    "production": ("ReachTargetAccounts",),
}
# The stages that keep reports (JUnit XML, Locust's) beside their record in the repository
# bucket, under pipeline/<app>/ (orchestrator/pipeline.py, `keep`): they may put there, nothing
# more of the repository.
REPORTING = ("acceptance", "capacity")
# The stages that may publish to the repository, and so sign its packages and metadata: their
# builds import the repository's signing key from the stack's secret (orchestrator/pipeline_key.py).
SIGNING = ("commit", "image")
# What the packager and the bake need on the build image beside Python: the programs, and the
# Amazon Linux packages that hold them, installed only when one is missing (an image of your
# own, or the sandbox's build machines, may have them all).
SYSTEM_PROGRAMS = {"commit": ("rpmbuild createrepo_c gpg zstd",
                              "rpm-build createrepo_c gnupg2 zstd"),
                   "image": ("rpmbuild createrepo_c gpg zstd ssh",
                             "rpm-build createrepo_c gnupg2 zstd openssh-clients")}
# The build installs Kiln's runtime from the source itself, never from a package index: the
# wheelhouse `invoke pipeline.push` puts in the source archive holds exactly the locked wheels
# (uv.lock, for the build image's Python), checked against the lock's hashes. Kiln itself is
# the checkout: `invoke` runs its tasks.py from there.
PYTHON = "3.11"  # the build image's (runtime-versions), the wheels' ABI
WHEELHOUSE = "wheelhouse"
INSTALL = [
    "python3 -m venv .venv",
    # --no-compile: the build's one run compiles what it imports; the rest would be wasted.
    f".venv/bin/pip install -q --no-compile --no-index --find-links {WHEELHOUSE} --no-deps "
    f"--require-hashes -r {WHEELHOUSE}/requirements.txt",
    'export PATH="$CODEBUILD_SRC_DIR/.venv/bin:$PATH"',
]
# A repository source (codecommit, codeconnections) is the checkout without wheels: there the
# build installs from the lock itself as `make setup` does, uv pinned by hash and every package
# by uv.lock's hashes (from the index, through the build's NAT gateway or its own internet).
INSTALL_FROM_LOCK = [
    "python3 -m venv .venv-uv",
    ".venv-uv/bin/pip install -q --require-hashes -r requirements/uv.txt",
    "UV_PROJECT_ENVIRONMENT=.venv .venv-uv/bin/uv sync -q --locked --no-dev "
    "--no-install-project --python python3",
    'export PATH="$CODEBUILD_SRC_DIR/.venv/bin:$PATH"',
]


def engine(settings, app: str) -> pipelines.Engine | None:
    entry = (settings.get("apps") or {}).get(app) or {}
    return pipelines.engine(app, entry.get("pipeline"))


def engine_apps(settings) -> list[str]:
    """The apps whose pipeline runs on CodePipeline."""
    return [app for app in apps.names(settings) if engine(settings, app) is not None]


def app_stages(settings, app: str) -> list[pipelines.Stage]:
    entry = (settings.get("apps") or {}).get(app) or {}
    return pipelines.check(app, entry.get("pipeline"))


# -- the commands and the buildspec ----------------------------------------------------------


def stage_command(app: str, stage: str) -> str:
    """The command that runs one stage, on a laptop as in CodeBuild or another CI."""
    return (f"invoke pipeline.run --app {shlex.quote(app)} --stage {shlex.quote(stage)} "
            f'--version "${VERSION_VARIABLE}"')


def signs(settings, stage: pipelines.Stage) -> bool:
    """Whether the stage's build needs the repository's signing key."""
    return bool(settings.repo.sign) and stage.action in SIGNING


def key_import(app: str) -> list[str]:
    """A signing stage's PRE_BUILD: the key from the stack's secret into a GnuPG home of the
    build's own (mktemp -d: a private folder), which Kiln signs from (kiln.repo.gpg_home)."""
    return ['export INVOKE_KILN_REPO_GPG_HOME="$(mktemp -d)"',
            f"invoke pipeline.key --app {shlex.quote(app)} --import"]


def buildspec(app: str, stage: pipelines.Stage, signing: bool = False,
              source: str = "s3") -> dict:
    """The CodeBuild buildspec of one stage: install Kiln from its lock (and, for a stage that
    signs, import the signing key), then the stage's own command and nothing else, so the
    pipeline and `invoke pipeline.run` cannot drift apart."""
    install = list(INSTALL if source == "s3" else INSTALL_FROM_LOCK)
    if stage.action in SYSTEM_PROGRAMS:
        programs, packages = SYSTEM_PROGRAMS[stage.action]
        install.insert(0, f"type -P {programs} >/dev/null || dnf install -y -q {packages}")
    phases = {"install": {"runtime-versions": {"python": PYTHON}, "commands": install}}
    if signing:
        phases["pre_build"] = {"commands": key_import(app)}
    phases["build"] = {"commands": [stage_command(app, stage.name)]}
    return {"version": 0.2, "env": {"shell": "bash"}, "phases": phases}


# -- names -----------------------------------------------------------------------------------


def pipeline_name(settings, app: str) -> str:
    return stacks.stack_name(settings, PART.format(app=app))


def project_name(settings, app: str, stage: str) -> str:
    return f"{pipeline_name(settings, app)}-{stage}"


def project_role_name(settings, app: str, stage: str) -> str:
    """IAM role names are at most 64 characters: a longer one is refused in one line."""
    name = project_name(settings, app, stage)
    if len(name) > 64:
        raise KilnError(f"kiln.apps.{app}.pipeline: the role of stage {stage}, {name}, is "
                        f"longer than IAM's 64 characters: shorten the app's or the stage's "
                        f"name, or kiln.stacks.prefix")
    return name


def project_role_pattern(settings, app: str, partition: str, account_id: str) -> str:
    """The ARNs of an app's project roles, which the deployer roles trust."""
    return f"arn:{partition}:iam::{account_id}:role/{pipeline_name(settings, app)}-*"


# -- the template ------------------------------------------------------------------------------


def _sub(text: str) -> dict:
    return {"Fn::Sub": text}


def _operator_statements(names: tuple[str, ...]) -> list[dict]:
    document = json.loads((bootstrap.POLICIES / "operator.json").read_text())
    chosen = []
    for statement in document["Statement"]:
        if statement["Sid"] not in names:
            continue
        statement = dict(statement)
        if statement.get("Resource") == bootstrap.DEPLOYER_ROLES:
            statement["Resource"] = {"Ref": "DeployerRoleArns"}
        chosen.append(bootstrap._substituted(statement))
    return chosen


def _tags(app: str, role: str) -> list[dict]:
    return [{"Key": "kiln:managed-by", "Value": "kiln"}, {"Key": "kiln:app", "Value": app},
            {"Key": "kiln:role", "Value": role}]


def template(settings, app: str) -> str:
    """The stack kiln-pipeline-<app> as a CloudFormation template (JSON)."""
    found = engine(settings, app)
    if found is None:
        raise KilnError(f"kiln.apps.{app}.pipeline.engine: not codepipeline")
    stages = app_stages(settings, app)
    resources = {**_shared(app), **_source_resources(app, found.source)}
    for stage in stages:  # the approval stage's project runs after its manual approval
        resources.update(_project(settings, app, stage, found))
    if any(s.action in IN_BAKE_VPC for s in stages):
        resources.update(_build_security_group(app))
    outputs = {}
    if any(signs(settings, s) for s in stages):
        resources["SigningKey"] = _signing_key(app)
        outputs["SigningKeySecretArn"] = {"Value": {"Ref": "SigningKey"}}
    resources["Pipeline"] = _pipeline(settings, app, stages, found)
    resources["PipelineRole"] = _pipeline_role(settings, app, stages, found.source)
    return json.dumps({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"Kiln release pipeline of {app} on CodePipeline and CodeBuild. Managed "
                       f"by `invoke bootstrap`.",
        "Parameters": _parameters(),
        "Resources": resources,
        "Outputs": {
            "PipelineName": {"Value": {"Ref": "Pipeline"}},
            "ArtifactBucketName": {"Value": {"Ref": "ArtifactBucket"}},
            "TopicArn": {"Value": {"Ref": "Topic"}},
            "LogGroupName": {"Value": {"Ref": "LogGroup"}},
            **outputs,
        },
    }, indent=1)


def _parameters() -> dict:
    return {
        "Prefix": {"Type": "String", "Default": "kiln", "AllowedPattern": "[a-z][a-z0-9-]{1,20}"},
        "AppName": {"Type": "String", "AllowedPattern": "[a-z][a-z0-9-]{0,40}"},
        "BakeVpcId": {"Type": "String", "Description": "The build stack's BakeVpcId output"},
        "PipelineSubnetId": {"Type": "String",
                             "Description": "The build stack's PipelineSubnetId output: the "
                                            "bake VPC's private subnet, behind its NAT gateway"},
        "DeployerRoleArns": {"Type": "CommaDelimitedList",
                             "Description": "The deployer roles the stages assume"},
        "KilnTarget": {"Type": "String", "AllowedValues": ["aws", "sandbox"],
                       "Description": "kiln.target of the builds: the bootstrap's own"},
        "RepoKeyFingerprint": {"Type": "String", "Default": "",
                               "Description": "The build stack's RepoKeyFingerprint output: the "
                                              "key the signing stages sign with"},
        "DefaultVersion": {"Type": "String", "MinLength": 1,
                           "Description": "KILN_VERSION of an execution started without it "
                                          "(a new source revision): the manifest's version"},
        "LogRetentionDays": {"Type": "Number", "Default": 30, "AllowedValues": [
            1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827, 3653]},
    }


def _shared(app: str) -> dict:
    """The key, the artifact bucket, the topic, the failure rule and the log group."""
    root = _sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")
    return {
        "PipelineKey": {"Type": "AWS::KMS::Key", "Properties": {
            "Description": _sub("${Prefix}: the pipeline of ${AppName}: artifacts, notices, logs"),
            "EnableKeyRotation": True,
            "KeyPolicy": {"Version": "2012-10-17", "Statement": [
                {"Sid": "AccountAdministers", "Effect": "Allow", "Principal": {"AWS": root},
                 "Action": "kms:*", "Resource": "*"},
                # EventBridge publishes to the encrypted topic; CloudWatch Logs writes the logs.
                {"Sid": "EventsPublishNotices", "Effect": "Allow",
                 "Principal": {"Service": "events.amazonaws.com"},
                 "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*"},
                {"Sid": "LogsEncryptTheLog", "Effect": "Allow",
                 "Principal": {"Service": _sub("logs.${AWS::Region}.amazonaws.com")},
                 "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*",
                            "kms:GenerateDataKey*", "kms:Describe*"], "Resource": "*",
                 "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": _sub(
                     "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:"
                     "/${Prefix}/pipeline/${AppName}")}}},
            ]},
            "Tags": _tags(app, "pipeline")}},
        "PipelineKeyAlias": {"Type": "AWS::KMS::Alias", "Properties": {
            "AliasName": _sub("alias/${Prefix}-pipeline-${AppName}"),
            "TargetKeyId": {"Ref": "PipelineKey"}}},
        "ArtifactBucket": {
            "Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain", "Properties": {
                "VersioningConfiguration": {"Status": "Enabled"},
                "BucketEncryption": {"ServerSideEncryptionConfiguration": [{
                    "ServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": {"Fn::GetAtt": ["PipelineKey", "Arn"]}},
                    "BucketKeyEnabled": True}]},
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True, "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True, "RestrictPublicBuckets": True},
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                # A new source object starts an execution (the S3 source's rule).
                "NotificationConfiguration": {"EventBridgeConfiguration": {
                    "EventBridgeEnabled": True}},
                "LifecycleConfiguration": {"Rules": [{
                    "Id": "old-artifacts", "Status": "Enabled",
                    "NoncurrentVersionExpiration": {"NoncurrentDays": 90},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}]},
                "Tags": _tags(app, "pipeline")}},
        "ArtifactBucketPolicy": {"Type": "AWS::S3::BucketPolicy", "Properties": {
            "Bucket": {"Ref": "ArtifactBucket"},
            "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                "Resource": [{"Fn::GetAtt": ["ArtifactBucket", "Arn"]},
                             _sub("${ArtifactBucket.Arn}/*")],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}}},
        "Topic": {"Type": "AWS::SNS::Topic", "Properties": {
            "TopicName": _sub("${Prefix}-pipeline-${AppName}"),
            "KmsMasterKeyId": {"Ref": "PipelineKey"},
            "Tags": _tags(app, "pipeline")}},
        "TopicPolicy": {"Type": "AWS::SNS::TopicPolicy", "Properties": {
            "Topics": [{"Ref": "Topic"}],
            "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Sid": "FailuresFromEventBridge", "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"}, "Action": "sns:Publish",
                "Resource": {"Ref": "Topic"},
                "Condition": {"ArnEquals": {
                    "aws:SourceArn": {"Fn::GetAtt": ["FailureRule", "Arn"]}}}}]}}},
        "FailureRule": {"Type": "AWS::Events::Rule", "Properties": {
            "Description": _sub("${Prefix}: failed executions of the pipeline of ${AppName}"),
            "EventPattern": {
                "source": ["aws.codepipeline"],
                "detail-type": ["CodePipeline Pipeline Execution State Change"],
                "resources": [_sub("arn:${AWS::Partition}:codepipeline:${AWS::Region}:"
                                   "${AWS::AccountId}:${Pipeline}")],
                "detail": {"state": ["FAILED"]}},
            "Targets": [{"Id": "topic", "Arn": {"Ref": "Topic"}}]}},
        "LogGroup": {"Type": "AWS::Logs::LogGroup", "Properties": {
            "LogGroupName": _sub("/${Prefix}/pipeline/${AppName}"),
            "RetentionInDays": {"Ref": "LogRetentionDays"},
            "KmsKeyId": {"Fn::GetAtt": ["PipelineKey", "Arn"]},
            "Tags": _tags(app, "pipeline")}},
    }


def _signing_key(app: str) -> dict:
    """The secret the signing stages' builds import the repository's key from. Made empty:
    `invoke pipeline.key` puts the key, so it is never in a template or a parameter."""
    return {"Type": "AWS::SecretsManager::Secret", "Properties": {
        "Name": _sub("${Prefix}-pipeline-${AppName}/repo-signing-key"),
        "Description": _sub("${Prefix}: the repository's signing key (armored private key) for "
                            "the ${AppName} pipeline's builds that publish: invoke pipeline.key"),
        "KmsKeyId": {"Fn::GetAtt": ["PipelineKey", "Arn"]},
        "Tags": _tags(app, "pipeline")}}


def _build_security_group(app: str) -> dict:
    return {"BuildSecurityGroup": {"Type": "AWS::EC2::SecurityGroup", "Properties": {
        "GroupDescription": _sub("${Prefix}: the ${AppName} pipeline's builds in the bake VPC"),
        "VpcId": {"Ref": "BakeVpcId"},
        "SecurityGroupEgress": [
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0",
             "Description": "AWS APIs and dnf's repositories (HTTPS)"},
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIp": "0.0.0.0/0",
             "Description": "SSH to the bake instance"}],
        "Tags": _tags(app, "pipeline")}}}


def _logical(stage: str) -> str:
    return "".join(part.capitalize() for part in stage.split("-"))


def _project(settings, app: str, stage: pipelines.Stage, found: pipelines.Engine) -> dict:
    """The stage's CodeBuild project and its role."""
    logical = _logical(stage.name)
    signing = signs(settings, stage)
    variables = [{"Name": "INVOKE_KILN_TARGET", "Type": "PLAINTEXT",
                  "Value": {"Ref": "KilnTarget"}}]
    if signing:  # the key the build imports and signs with (its public fingerprint)
        variables.append({"Name": "INVOKE_KILN_REPO_GPG_KEY", "Type": "PLAINTEXT",
                          "Value": {"Ref": "RepoKeyFingerprint"}})
    project = {
        "Name": project_name(settings, app, stage.name),
        "Description": f"Kiln: stage {stage.name} ({stage.action}) of {app}",
        "ServiceRole": {"Fn::GetAtt": [f"{logical}Role", "Arn"]},
        "Artifacts": {"Type": "CODEPIPELINE"},
        "Source": {"Type": "CODEPIPELINE",
                   "BuildSpec": yaml.safe_dump(
                       buildspec(app, stage, signing, found.source["kind"]), sort_keys=False)},
        # The builds run Kiln against the target the stack was bootstrapped for (a checkout's
        # invoke.yaml may name another, e.g. the sandbox for its developers).
        "Environment": {"Type": "LINUX_CONTAINER", "ComputeType": found.compute_type,
                        "Image": IMAGE, "ImagePullCredentialsType": "CODEBUILD",
                        "PrivilegedMode": False, "EnvironmentVariables": variables},
        "EncryptionKey": {"Fn::GetAtt": ["PipelineKey", "Arn"]},
        "TimeoutInMinutes": 240 if stage.action == "image" else 120,
        "LogsConfig": {"CloudWatchLogs": {"Status": "ENABLED", "GroupName": {"Ref": "LogGroup"},
                                          "StreamName": stage.name}},
        "Tags": _tags(app, "pipeline"),
    }
    if stage.action in IN_BAKE_VPC:
        project["VpcConfig"] = {"VpcId": {"Ref": "BakeVpcId"},
                                "Subnets": [{"Ref": "PipelineSubnetId"}],
                                "SecurityGroupIds": [{"Ref": "BuildSecurityGroup"}]}
    return {f"{logical}Project": {"Type": "AWS::CodeBuild::Project", "Properties": project},
            f"{logical}Role": _project_role(settings, app, stage)}


def _trust(service: str) -> dict:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}}]}


def _project_role(settings, app: str, stage: pipelines.Stage) -> dict:
    name = project_role_name(settings, app, stage.name)
    log_group = _sub("arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:"
                     "/${Prefix}/pipeline/${AppName}:*")
    statements = [
        {"Sid": "WriteItsLog", "Effect": "Allow",
         "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": log_group},
        {"Sid": "ReadTheSource", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:GetObjectVersion"],
         "Resource": _sub("${ArtifactBucket.Arn}/*")},
        {"Sid": "UseThePipelineKey", "Effect": "Allow",
         "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
         "Resource": {"Fn::GetAtt": ["PipelineKey", "Arn"]}},
        # Each stage's outcome is tagged on the version's images (orchestrator/pipeline.py).
        {"Sid": "TagStageOutcomes", "Effect": "Allow",
         "Action": ["ec2:DescribeImages"], "Resource": "*"},
        {"Sid": "TagKilnImages", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": _sub("arn:${AWS::Partition}:ec2:${AWS::Region}::image/*"),
         "Condition": {"StringEquals": {"aws:ResourceTag/kiln:managed-by": "kiln"}}},
        *_operator_statements(LEDGER + STATEMENTS[stage.action]),
    ]
    if stage.action in REPORTING:
        statements.append({"Sid": "KeepItsReports", "Effect": "Allow", "Action": "s3:PutObject",
                           "Resource": _sub("arn:${AWS::Partition}:s3:::${Prefix}-repo-"
                                            "${AWS::AccountId}-*/pipeline/${AppName}/*")})
    if stage.action in IN_BAKE_VPC:
        statements += _vpc_statements()
    if signs(settings, stage):
        # Secrets Manager decrypts it with the pipeline's key as the caller (UseThePipelineKey).
        statements.append({"Sid": "ReadTheSigningKey", "Effect": "Allow",
                           "Action": "secretsmanager:GetSecretValue",
                           "Resource": {"Ref": "SigningKey"}})
    return {"Type": "AWS::IAM::Role", "Properties": {
        "RoleName": name,
        "Description": f"Kiln: CodeBuild runs stage {stage.name} of {app}",
        "AssumeRolePolicyDocument": _trust("codebuild.amazonaws.com"),
        "Policies": [{"PolicyName": "stage", "PolicyDocument": {
            "Version": "2012-10-17", "Statement": statements}}],
        "Tags": _tags(app, "pipeline")}}


def _vpc_statements() -> list[dict]:
    """What CodeBuild needs to run a build in a VPC (its network interface)."""
    return [
        {"Sid": "BuildInTheBakeVpc", "Effect": "Allow",
         "Action": ["ec2:CreateNetworkInterface", "ec2:DescribeDhcpOptions",
                    "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
                    "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeVpcs"],
         "Resource": "*"},
        {"Sid": "BuildInterfaceOfItsSubnet", "Effect": "Allow",
         "Action": "ec2:CreateNetworkInterfacePermission",
         "Resource": _sub("arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:"
                          "network-interface/*"),
         "Condition": {
             "StringEquals": {"ec2:AuthorizedService": "codebuild.amazonaws.com"},
             "ArnEquals": {"ec2:Subnet": [_sub(
                 "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:"
                 "subnet/${PipelineSubnetId}")]}}},
    ]


# -- the source ----------------------------------------------------------------------------------


def _source_bucket(source: dict):
    return source["bucket"] or {"Ref": "ArtifactBucket"}


def _source_resources(app: str, source: dict) -> dict:
    """The rule that starts an execution on a new source revision (CodeConnections detects
    changes itself), and the role it starts the pipeline with."""
    if source["kind"] == "codeconnections":
        return {}
    if source["kind"] == "s3":
        pattern = {"source": ["aws.s3"], "detail-type": ["Object Created"],
                   "detail": {"bucket": {"name": [_source_bucket(source)]},
                              "object": {"key": [source["key"]]}}}
    else:
        pattern = {"source": ["aws.codecommit"],
                   "detail-type": ["CodeCommit Repository State Change"],
                   "resources": [_sub("arn:${AWS::Partition}:codecommit:${AWS::Region}:"
                                      f"${{AWS::AccountId}}:{source['repository']}")],
                   "detail": {"event": ["referenceCreated", "referenceUpdated"],
                              "referenceType": ["branch"],
                              "referenceName": [source["branch"]]}}
    pipeline_arn = _sub("arn:${AWS::Partition}:codepipeline:${AWS::Region}:${AWS::AccountId}:"
                        "${Pipeline}")
    return {
        "StartRule": {"Type": "AWS::Events::Rule", "Properties": {
            "Description": _sub("${Prefix}: a new source revision starts ${AppName}'s pipeline"),
            "EventPattern": pattern,
            "Targets": [{"Id": "pipeline", "Arn": pipeline_arn,
                         "RoleArn": {"Fn::GetAtt": ["StartRole", "Arn"]}}]}},
        "StartRole": {"Type": "AWS::IAM::Role", "Properties": {
            "Description": "Kiln: EventBridge starts the pipeline on a new source revision",
            "AssumeRolePolicyDocument": _trust("events.amazonaws.com"),
            "Policies": [{"PolicyName": "start", "PolicyDocument": {
                "Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Action": "codepipeline:StartPipelineExecution",
                    "Resource": pipeline_arn}]}}],
            "Tags": _tags(app, "pipeline")}},
    }


def _source_action(source: dict) -> dict:
    base = {"Name": "source", "RunOrder": 1, "OutputArtifacts": [{"Name": "Source"}],
            "Namespace": "source"}
    if source["kind"] == "s3":
        return {**base, "ActionTypeId": _type("Source", "S3"), "Configuration": {
            "S3Bucket": _source_bucket(source), "S3ObjectKey": source["key"],
            "PollForSourceChanges": "false"}}
    if source["kind"] == "codecommit":
        return {**base, "ActionTypeId": _type("Source", "CodeCommit"), "Configuration": {
            "RepositoryName": source["repository"], "BranchName": source["branch"],
            "PollForSourceChanges": "false", "OutputArtifactFormat": "CODE_ZIP"}}
    return {**base, "ActionTypeId": _type("Source", "CodeStarSourceConnection"),
            "Configuration": {"ConnectionArn": source["connection"],
                              "FullRepositoryId": source["repository"],
                              "BranchName": source["branch"], "DetectChanges": "true",
                              "OutputArtifactFormat": "CODE_ZIP"}}


def _type(category: str, provider: str) -> dict:
    return {"Category": category, "Owner": "AWS", "Provider": provider, "Version": "1"}


# -- the pipeline ------------------------------------------------------------------------------


def _pipeline(settings, app: str, stages: list, found: pipelines.Engine) -> dict:
    variables = json.dumps([{"name": VERSION_VARIABLE, "type": "PLAINTEXT",
                             "value": f"#{{variables.{VERSION_VARIABLE}}}"}])
    shape = [{"Name": "Source", "Actions": [_source_action(found.source)]}]
    for stage in stages:
        build = {"Name": "run",
                 "ActionTypeId": _type("Build", "CodeBuild"),
                 "InputArtifacts": [{"Name": "Source"}], "RunOrder": 1,
                 "Configuration": {"ProjectName": {"Ref": f"{_logical(stage.name)}Project"},
                                   "EnvironmentVariables": variables}}
        actions = [build]
        if stage.action == "approval":
            actions = [{"Name": "approve", "ActionTypeId": _type("Approval", "Manual"),
                        "RunOrder": 1, "Configuration": {
                            "NotificationArn": {"Ref": "Topic"},
                            "CustomData": f"Approve with `invoke pipeline.approve --app {app} "
                                          f"--version V`: it records you as the approver and "
                                          f"releases this action (or pipeline.reject)"}},
                       {**build, "RunOrder": 2}]
        shape.append({"Name": stage.name, "Actions": actions})
    return {"Type": "AWS::CodePipeline::Pipeline", "Properties": {
        "Name": pipeline_name(settings, app),
        "PipelineType": "V2",
        "ExecutionMode": "QUEUED",
        "RoleArn": {"Fn::GetAtt": ["PipelineRole", "Arn"]},
        "ArtifactStore": {"Type": "S3", "Location": {"Ref": "ArtifactBucket"},
                          "EncryptionKey": {"Type": "KMS",
                                            "Id": {"Fn::GetAtt": ["PipelineKey", "Arn"]}}},
        "Variables": [{"Name": VERSION_VARIABLE, "DefaultValue": {"Ref": "DefaultVersion"},
                       "Description": "The version the execution takes through the stages"}],
        "Stages": shape,
        "Tags": _tags(app, "pipeline")}}


def _pipeline_role(settings, app: str, stages: list, source: dict) -> dict:
    projects = [_sub("arn:${AWS::Partition}:codebuild:${AWS::Region}:${AWS::AccountId}:"
                     f"project/{project_name(settings, app, s.name)}") for s in stages]
    statements = [
        {"Sid": "Artifacts", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"],
         "Resource": _sub("${ArtifactBucket.Arn}/*")},
        {"Sid": "ArtifactBucket", "Effect": "Allow",
         "Action": ["s3:GetBucketVersioning", "s3:GetBucketLocation"],
         "Resource": {"Fn::GetAtt": ["ArtifactBucket", "Arn"]}},
        {"Sid": "UseThePipelineKey", "Effect": "Allow",
         "Action": ["kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt"],
         "Resource": {"Fn::GetAtt": ["PipelineKey", "Arn"]}},
        {"Sid": "RunTheStages", "Effect": "Allow",
         "Action": ["codebuild:StartBuild", "codebuild:BatchGetBuilds",
                    "codebuild:StopBuild"], "Resource": projects},
        {"Sid": "NotifyApprovers", "Effect": "Allow", "Action": "sns:Publish",
         "Resource": {"Ref": "Topic"}},
    ]
    statements += _source_statements(source)
    return {"Type": "AWS::IAM::Role", "Properties": {
        "RoleName": pipeline_name(settings, app),
        "Description": f"Kiln: CodePipeline runs the release pipeline of {app}",
        "AssumeRolePolicyDocument": _trust("codepipeline.amazonaws.com"),
        "Policies": [{"PolicyName": "pipeline", "PolicyDocument": {
            "Version": "2012-10-17", "Statement": statements}}],
        "Tags": _tags(app, "pipeline")}}


def _source_statements(source: dict) -> list[dict]:
    if source["kind"] == "s3" and source["bucket"]:
        return [{"Sid": "ReadTheSourceObject", "Effect": "Allow",
                 "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                 "Resource": _sub(f"arn:${{AWS::Partition}}:s3:::{source['bucket']}/"
                                  f"{source['key']}")},
                {"Sid": "ReadTheSourceBucket", "Effect": "Allow",
                 "Action": ["s3:GetBucketVersioning"],
                 "Resource": _sub(f"arn:${{AWS::Partition}}:s3:::{source['bucket']}")}]
    if source["kind"] == "codecommit":
        return [{"Sid": "ReadTheRepository", "Effect": "Allow",
                 "Action": ["codecommit:GetBranch", "codecommit:GetCommit",
                            "codecommit:UploadArchive", "codecommit:GetUploadArchiveStatus",
                            "codecommit:CancelUploadArchive"],
                 "Resource": _sub("arn:${AWS::Partition}:codecommit:${AWS::Region}:"
                                  f"${{AWS::AccountId}}:{source['repository']}")}]
    if source["kind"] == "codeconnections":
        return [{"Sid": "UseTheConnection", "Effect": "Allow",
                 "Action": ["codeconnections:UseConnection",
                            "codestar-connections:UseConnection"],
                 "Resource": source["connection"]}]
    return []


# -- bootstrap -----------------------------------------------------------------------------------


def parameters(place, app: str) -> dict[str, str]:
    """The pipeline stack's parameters: the bake VPC and its pipeline subnet from the build
    stack (which must exist: bootstrap makes it first), the deployer roles."""
    settings = place.settings
    built = _build_outputs(place)
    subnet = built.get("PipelineSubnetId")
    if not subnet:  # a build stack of before the first pipeline: bootstrap updates it first
        raise bootstrap.NotYet(stacks.stack_name(settings, "build"))
    operator = bootstrap.operator_parameters(place)
    return {"Prefix": settings.stacks.prefix, "AppName": app, "BakeVpcId": built["BakeVpcId"],
            "PipelineSubnetId": subnet, "DeployerRoleArns": operator["DeployerRoleArns"],
            "KilnTarget": settings.target,
            "RepoKeyFingerprint": built.get("RepoKeyFingerprint", ""),
            "DefaultVersion": _manifest_version(settings, app),
            "LogRetentionDays": str(settings.bootstrap.log_retention_days)}


def _where(settings, app: str) -> list[str]:
    """The build account, while the app's pipeline is on CodePipeline."""
    return bootstrap.build_account(settings) if app in engine_apps(settings) else []


def _build_outputs(place) -> dict[str, str]:
    name = stacks.stack_name(place.settings, "build")
    if bootstrap.existing_status(place.client("cloudformation"), name) is None:
        raise bootstrap.NotYet(name)
    return bootstrap.outputs(place.client("cloudformation"), name)


def _manifest_version(settings, app: str) -> str:
    from packager import manifest

    return manifest.load(apps.for_app(settings, app).manifest, digest=False).version


def register(settings) -> list[str]:
    """Add kiln-pipeline-<app> to `invoke bootstrap` for every app on CodePipeline."""
    parts = []
    for app in engine_apps(settings):
        part = PART.format(app=app)
        bootstrap.register(bootstrap.StackSpec(
            part, f"{part}.json", lambda config, app=app: _where(config, app),
            lambda place, app=app: parameters(place, app), OUTPUTS,
            render_for=lambda config, app=app: template(config, app)))
        for check in pipeline_checks.CHECKS:
            if check not in verify.CHECKS.get(part, []):
                verify.register(part, check)
        parts.append(part)
    return parts


# -- the source archive: the checkout and the wheels of its lock ------------------------------

# The wheels' platforms: those the build image runs (Amazon Linux 2023: glibc 2.34, x86_64),
# each named, as pip takes a --platform literally.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in (34, 28, 27, 24, 17, 12, 5)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def runtime_requirements(root: Path) -> str:
    """Kiln's runtime dependencies exactly as uv.lock pins them, each with its hashes."""
    done = subprocess.run([str(root / ".venv-uv/bin/uv"), "export", "--frozen", "--no-dev",
                           "--no-emit-project", "--no-header", "--format", "requirements-txt"],
                          cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise KilnError(f"uv export (the runtime's locked requirements): "
                        f"{done.stderr.strip()[-300:]}")
    return done.stdout


def wheelhouse(root: Path, folder: Path) -> list[Path]:
    """The locked runtime wheels for the build image, downloaded into `folder` (kept between
    pushes: a wheel already there is not fetched again) with requirements.txt; only the
    wheels whose hashes the lock names. pip checks every hash when it downloads."""
    folder.mkdir(parents=True, exist_ok=True)
    requirements = runtime_requirements(root)
    (folder / "requirements.txt").write_text(requirements)
    download = [str(root / ".venv-uv/bin/pip"), "download", "-q", "--disable-pip-version-check",
                "--no-deps", "--only-binary", ":all:", "--require-hashes",
                "--python-version", PYTHON, "--implementation", "cp",
                "--abi", "cp" + PYTHON.replace(".", ""),
                *(f"--platform={platform}" for platform in PLATFORMS),
                "-r", str(folder / "requirements.txt"), "-d", str(folder)]
    done = subprocess.run([*download, "--no-index", "--find-links", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:  # a wheel not kept yet: from the package index
        done = subprocess.run(download, capture_output=True, text=True)
    if done.returncode != 0:
        raise KilnError(f"pip download (the runtime's locked wheels): "
                        f"{done.stderr.strip()[-400:]}")
    locked = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", requirements))
    return [folder / "requirements.txt"] + [
        wheel for wheel in sorted(folder.glob("*.whl"))
        if hashlib.sha256(wheel.read_bytes()).hexdigest() in locked]


def source_archive(root: Path, wheels: list[Path]) -> bytes:
    """The zip a pipeline's S3 source takes: the checkout's tracked files as they are on disk
    (what `git ls-files` lists) and, under wheelhouse/, the locked runtime wheels."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True)
    if listed.returncode != 0:
        raise KilnError(f"{root}: not a git checkout ({listed.stderr.decode().strip()})")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in listed.stdout.decode().split("\0"):
            if name and (root / name).is_file():  # a tracked file deleted on disk is not sent
                archive.write(root / name, name)
        for wheel in wheels:  # already compressed
            archive.write(wheel, f"{WHEELHOUSE}/{wheel.name}", zipfile.ZIP_STORED)
    return buffer.getvalue()


def push(aws, app: str, root: Path) -> dict:
    """Upload the app's source archive to its pipeline's S3 source: the new object version
    starts an execution (the source's EventBridge rule)."""
    found = engine(aws.settings, app)
    if found is None or found.source["kind"] != "s3":
        raise KilnError(f"kiln.apps.{app}.pipeline.source.kind: pipeline.push uploads to an s3 "
                        f"source; a codecommit or codeconnections source takes a git push")
    bucket = found.source["bucket"] or stacks.output(aws, PART.format(app=app),
                                                     "ArtifactBucketName")
    body = source_archive(root, wheelhouse(root, Path(aws.settings.dist) / WHEELHOUSE))
    return upload(aws, app, bucket, found.source["key"], body)


def upload(aws, app: str, bucket: str, key: str, body: bytes) -> dict:
    """The source archive put as the source's new object version, tagged at creation."""
    labels = tags.kiln_tags(app, "pipeline-source", run_id=tags.new_run_id())
    put = aws.client("s3").put_object(Bucket=bucket, Key=key, Body=body,
                                      Tagging=urlencode(labels))
    say(f"pipeline {app}: source s3://{bucket}/{key} version {put.get('VersionId')} "
        f"({len(body) // 1024} KiB)")
    return {"app": app, "bucket": bucket, "key": key, "version_id": put.get("VersionId"),
            "bytes": len(body)}


def source_objects(settings, partition: str) -> list[str]:
    """The ARNs `invoke pipeline.push` puts to (s3:PutObject, s3:PutObjectTagging): each
    app's S3 source object, in its own bucket or in its pipeline's artifact bucket, whose
    name CloudFormation makes from the stack's (cut to fit S3's 63 characters)."""
    found = []
    for app in engine_apps(settings):
        source = engine(settings, app).source
        if source["kind"] != "s3":
            continue
        stack = pipeline_name(settings, app).lower()
        bucket = source["bucket"] or (f"{stack}-artifactbucket-*" if len(stack) <= 34
                                      else f"{stack[:34]}*")
        found.append(f"arn:{partition}:s3:::{bucket}/{source['key']}")
    return found


# -- reading the pipeline on AWS -----------------------------------------------------------------


def deployed(aws, app: str) -> str | None:
    """The pipeline's name when the stack kiln-pipeline-<app> exists in the build account."""
    name = stacks.stack_name(aws.settings, PART.format(app=app))
    if bootstrap.existing_status(aws.client("cloudformation"), name) in (None,
                                                                         "REVIEW_IN_PROGRESS"):
        return None
    return stacks.output(aws, PART.format(app=app), "PipelineName")


def status(aws, limit: int = 5) -> dict | None:
    """The app's pipeline on CodePipeline (GetPipelineState, ListPipelineExecutions): each
    stage's latest execution and the newest executions; None when the app has no such stack."""
    app = aws.settings.app
    name = deployed(aws, app)
    if name is None:
        return None
    client = aws.client("codepipeline")
    state = client.get_pipeline_state(name=name)
    executions = client.list_pipeline_executions(pipelineName=name,
                                                 maxResults=limit)["pipelineExecutionSummaries"]
    say(f"pipeline {app} on CodePipeline ({name})")
    rows = []
    for stage in state.get("stageStates", []):
        latest = stage.get("latestExecution") or {}
        actions = [{"action": a["actionName"],
                    "status": (a.get("latestExecution") or {}).get("status", "-"),
                    "summary": (a.get("latestExecution") or {}).get("summary")}
                   for a in stage.get("actionStates", [])]
        say(f"  {stage['stageName']:<16} {latest.get('status', 'not run'):<12} "
            + ", ".join(f"{a['action']}: {a['status']}" for a in actions))
        rows.append({"stage": stage["stageName"], "status": latest.get("status"),
                     "execution": latest.get("pipelineExecutionId"), "actions": actions})
    say("executions, newest first:")
    for found in executions:
        started = found.get("startTime")
        say(f"  {found['pipelineExecutionId']}  {found['status']:<11} "
            f"{started:%Y-%m-%d %H:%M:%S}Z  "
            f"{(found.get('trigger') or {}).get('triggerType', '-')}" if started else
            f"  {found['pipelineExecutionId']}  {found['status']}")
    return {"app": app, "engine": "codepipeline", "pipeline": name, "stages": rows,
            "executions": [{"id": e["pipelineExecutionId"], "status": e["status"],
                            "started": e.get("startTime"), "trigger": e.get("trigger")}
                           for e in executions]}


def release_approval(aws, app: str, version: str, stage: str, approved: bool,
                     summary: str) -> str | None:
    """Answer the pipeline's pending manual approval at `stage` of an execution of `version` (a
    release id, X.Y.Z-R) once Kiln recorded the decision (`invoke pipeline.approve` / `reject`);
    the pipeline's next action reads that record. Nothing pending for the version, or no
    pipeline on CodePipeline: None."""
    name = deployed(aws, app)
    if name is None:
        return None
    client = aws.client("codepipeline")
    state = client.get_pipeline_state(name=name)
    for found in state.get("stageStates", []):
        if found["stageName"] != stage:
            continue
        execution = (found.get("latestExecution") or {}).get("pipelineExecutionId")
        if execution is None or _release_of(aws.settings, client, name, execution) != version:
            return None
        for action in found.get("actionStates", []):
            token = (action.get("latestExecution") or {}).get("token")
            if action["actionName"] == "approve" and token and \
                    action["latestExecution"].get("status") == "InProgress":
                client.put_approval_result(
                    pipelineName=name, stageName=stage, actionName="approve", token=token,
                    result={"summary": summary[:512],
                            "status": "Approved" if approved else "Rejected"})
                return name
    return None


def _release_of(settings, client, name: str, execution: str) -> str | None:
    """The release (X.Y.Z-R) an execution takes through the stages: its KILN_VERSION as the
    stages read it (`--version "$KILN_VERSION"`, X.Y.Z taking the manifest's iteration), so
    that it compares with the release `invoke pipeline.approve --version X.Y.Z` decided on."""
    from orchestrator.pipeline import release_id

    found = client.get_pipeline_execution(pipelineName=name, pipelineExecutionId=execution)
    for variable in found["pipelineExecution"].get("variables", []):
        if variable["name"] == VERSION_VARIABLE:
            try:
                return release_id(settings, variable["resolvedValue"])
            except KilnError:  # not a version: not the one decided on
                return None
    return None
