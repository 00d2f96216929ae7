"""The sandbox's IAM is as strict as AWS's where Kiln's roles rely on it (sandbox/aws/iam/
resources.py, policy.py): resource ARNs and tags for EC2, Auto Scaling and ELB, the tags a request
asks for, tag-on-create authorization, kms:ResourceAliases, negated operators on absent keys,
NotPrincipal, and condition keys the sandbox cannot compute failing closed."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from tests.test_sandbox_access import client, policy, session_client

ACCOUNT = "123456789012"
ROOT_TRUST = {"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                             "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}}]}
KILN = [{"Key": "kiln:managed-by", "Value": "kiln"}]


def as_role(box, service: str, statements: list, trust: dict | None = None, name="strict"):
    """A client of `service` signed as a new role whose only policy is `statements`."""
    client(box, "iam").create_role(RoleName=name,
                                   AssumeRolePolicyDocument=json.dumps(trust or ROOT_TRUST))
    client(box, "iam").put_role_policy(RoleName=name, PolicyName="p",
                                       PolicyDocument=policy(*statements))
    credentials = client(box, "sts").assume_role(
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{name}", RoleSessionName="strict")["Credentials"]
    return session_client(service, box, credentials)


def denied(call) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    assert raised.value.response["Error"]["Code"] in ("UnauthorizedOperation", "AccessDenied",
                                                       "AccessDeniedException")
    return raised.value.response["Error"]["Message"]


def test_a_condition_key_the_sandbox_cannot_compute_fails_closed(clean_strict):
    """aws:RequestedRegion is not computed: an Allow on it does not apply, a Deny on it does,
    and the denial names the key."""
    ec2 = as_role(clean_strict, "ec2", [
        {"Effect": "Allow", "Action": "ec2:DescribeImages", "Resource": "*",
         "Condition": {"StringEquals": {"aws:RequestedRegion": "us-east-1"}}},
        {"Effect": "Allow", "Action": "ec2:DescribeVpcs", "Resource": "*"},
        {"Effect": "Deny", "Action": "ec2:DescribeVpcs", "Resource": "*",
         "Condition": {"StringEquals": {"aws:RequestedRegion": "eu-west-1"}}}])
    assert "aws:RequestedRegion" in denied(lambda: ec2.describe_images(Owners=["self"]))
    denied(ec2.describe_vpcs)


def test_negated_operators_are_true_on_absent_keys(clean_strict):
    """As AWS documents: StringNotEquals on a key the request lacks is true."""
    trust = {"Statement": [{**ROOT_TRUST["Statement"][0], "Condition": {
        "StringNotEquals": {"sts:ExternalId": "not-this-one"}}}]}
    ec2 = as_role(clean_strict, "ec2", [
        {"Effect": "Allow", "Action": "ec2:DescribeImages", "Resource": "*"}], trust=trust)
    ec2.describe_images(Owners=["self"])


def test_not_principal_denies_everyone_it_does_not_name(clean_strict):
    s3 = client(clean_strict, "s3")
    s3.create_bucket(Bucket="guarded")
    s3.put_object(Bucket="guarded", Key="k", Body=b"x")
    admin = f"arn:aws:iam::{ACCOUNT}:user/kiln-admin"
    s3.put_bucket_policy(Bucket="guarded", Policy=policy(
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::guarded/*",
         "NotPrincipal": {"AWS": [admin, f"arn:aws:iam::{ACCOUNT}:root"]}}))
    s3.get_object(Bucket="guarded", Key="k")
    reader = as_role(clean_strict, "s3", [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::guarded/*"}])
    assert "explicitly denies" in denied(lambda: reader.get_object(Bucket="guarded", Key="k"))


def _base_image(box) -> str:
    return client(box, "ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]


def test_tagging_a_new_launch_template_needs_create_tags_with_its_create_action(clean_strict):
    may_create = {"Effect": "Allow", "Action": "ec2:CreateLaunchTemplate",
                  "Resource": f"arn:aws:ec2:*:{ACCOUNT}:launch-template/*",
                  "Condition": {"StringEquals": {"aws:RequestTag/kiln:managed-by": "kiln"}}}
    ec2 = as_role(clean_strict, "ec2", [may_create])
    spec = [{"ResourceType": "launch-template", "Tags": KILN}]
    data = {"ImageId": _base_image(clean_strict)}
    message = denied(lambda: ec2.create_launch_template(
        LaunchTemplateName="a", LaunchTemplateData=data, TagSpecifications=spec))
    assert "ec2:CreateTags" in message
    ec2 = as_role(clean_strict, "ec2", [may_create, {
        "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*",
        "Condition": {"StringEquals": {"ec2:CreateAction": "CreateLaunchTemplate"}}}],
        name="tagger")
    ec2.create_launch_template(LaunchTemplateName="a", LaunchTemplateData=data,
                               TagSpecifications=spec)
    other = [{"ResourceType": "launch-template", "Tags": [{"Key": "kiln:managed-by",
                                                           "Value": "else"}]}]
    assert "ec2:CreateLaunchTemplate" in denied(lambda: ec2.create_launch_template(
        LaunchTemplateName="b", LaunchTemplateData=data, TagSpecifications=other))
    # CreateTags on its own carries no ec2:CreateAction
    template = client(clean_strict, "ec2").describe_launch_templates()["LaunchTemplates"][0][
        "LaunchTemplateId"]
    assert f"launch-template/{template}" in denied(lambda: ec2.create_tags(
        Resources=[template], Tags=[{"Key": "x", "Value": "y"}]))


def test_auto_scaling_groups_are_scoped_by_their_arn_tags_and_tags_on_create(clean_strict):
    admin = client(clean_strict, "autoscaling")
    ec2 = client(clean_strict, "ec2")
    template = ec2.create_launch_template(LaunchTemplateName="t", LaunchTemplateData={
        "ImageId": _base_image(clean_strict)})["LaunchTemplate"]["LaunchTemplateId"]
    spec = {"LaunchTemplate": {"LaunchTemplateId": template}, "MinSize": 0, "MaxSize": 0,
            "AvailabilityZones": ["us-east-1a"]}
    admin.create_auto_scaling_group(AutoScalingGroupName="theirs", **spec)
    admin.create_auto_scaling_group(AutoScalingGroupName="ours", Tags=[
        {**KILN[0], "ResourceId": "ours", "ResourceType": "auto-scaling-group",
         "PropagateAtLaunch": True}], **spec)
    creates = {"Effect": "Allow", "Action": ["autoscaling:CreateAutoScalingGroup",
                                             "ec2:RunInstances", "ec2:Describe*"],
               "Resource": "*",
               "Condition": {"StringEqualsIfExists": {"aws:RequestTag/kiln:managed-by": "kiln"}}}
    changes = {"Effect": "Allow", "Action": "autoscaling:UpdateAutoScalingGroup",
               "Resource": "*",
               "Condition": {"StringEquals": {"aws:ResourceTag/kiln:managed-by": "kiln"}}}
    no_launch = as_role(clean_strict, "autoscaling", [
        {**creates, "Action": ["autoscaling:CreateAutoScalingGroup"]}], name="no-launch")
    assert "ec2:RunInstances" in denied(lambda: no_launch.create_auto_scaling_group(
        AutoScalingGroupName="new", **spec))
    deployer = as_role(clean_strict, "autoscaling", [creates, changes])
    deployer.update_auto_scaling_group(AutoScalingGroupName="ours", MaxSize=1)
    assert "autoScalingGroupName/theirs" in denied(
        lambda: deployer.update_auto_scaling_group(AutoScalingGroupName="theirs", MaxSize=1))
    tags = [{**KILN[0], "ResourceId": "new", "ResourceType": "auto-scaling-group",
             "PropagateAtLaunch": True}]
    assert "autoscaling:CreateOrUpdateTags" in denied(
        lambda: deployer.create_auto_scaling_group(AutoScalingGroupName="new", Tags=tags,
                                                   **spec))


def test_target_groups_are_scoped_by_their_arn_and_tags_on_create(clean_strict):
    vpc = client(clean_strict, "ec2").describe_vpcs()["Vpcs"][0]["VpcId"]
    elb = client(clean_strict, "elbv2")
    group = {"Protocol": "HTTP", "Port": 80, "VpcId": vpc}
    theirs = elb.create_target_group(Name="theirs", **group)["TargetGroups"][0]["TargetGroupArn"]
    creates = {"Effect": "Allow", "Action": ["elasticloadbalancing:CreateTargetGroup",
                                             "elasticloadbalancing:DeleteTargetGroup"],
               "Resource": f"arn:aws:elasticloadbalancing:*:{ACCOUNT}:targetgroup/kiln-*"}
    deployer = as_role(clean_strict, "elbv2", [creates])
    assert "targetgroup/theirs/" in denied(lambda: deployer.delete_target_group(
        TargetGroupArn=theirs))
    assert "elasticloadbalancing:AddTags" in denied(
        lambda: deployer.create_target_group(Name="kiln-a", Tags=KILN, **group))
    made = deployer.create_target_group(Name="kiln-b", **group)["TargetGroups"][0]
    deployer.delete_target_group(TargetGroupArn=made["TargetGroupArn"])


def test_kms_resource_aliases_name_the_keys_a_role_may_use(clean_strict):
    kms = client(clean_strict, "kms")
    aliased = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/kiln-ami", TargetKeyId=aliased)
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    user = as_role(clean_strict, "kms", [
        {"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": "*",
         "Condition": {"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/kiln-ami"}}}])
    user.describe_key(KeyId=aliased)
    denied(lambda: user.describe_key(KeyId=other))


def test_simulate_principal_policy_evaluates_the_given_context(clean_strict):
    """iam:SimulatePrincipalPolicy (sandbox/aws/iam/simulation.py): keys not given are absent
    and listed as missing, as IAM's simulator answers."""
    iam = client(clean_strict, "iam")
    iam.create_role(RoleName="simulated", AssumeRolePolicyDocument=json.dumps(ROOT_TRUST))
    iam.put_role_policy(RoleName="simulated", PolicyName="p", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*",
         "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}}}))
    arn = f"arn:aws:iam::{ACCOUNT}:role/simulated"

    def simulate(**context):
        entries = [{"ContextKeyName": k, "ContextKeyValues": [v], "ContextKeyType": "string"}
                   for k, v in context.items()]
        return iam.simulate_principal_policy(
            PolicySourceArn=arn, ActionNames=["ec2:CreateTags"],
            ResourceArns=["arn:aws:ec2:us-east-1:123456789012:instance/*"],
            ContextEntries=entries)["EvaluationResults"][0]

    bare = simulate()
    assert bare["EvalDecision"] == "implicitDeny"
    assert bare["MissingContextValues"] == ["ec2:CreateAction"]
    assert simulate(**{"ec2:CreateAction": "RunInstances"})["EvalDecision"] == "allowed"
