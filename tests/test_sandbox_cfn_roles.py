"""sandbox/aws/cloudformation/stacks.py: a stack's IAM role answers GetRolePolicy with a policy
document, and a stack update changes its inline policies and trust policy, as on AWS (moto kept
what the role was created with)."""

from __future__ import annotations

import json

import boto3


def template(policy: str, service: str) -> str:
    document = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}]}
    return json.dumps({"Resources": {
        "Role": {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": service},
                "Action": "sts:AssumeRole"}]},
            "Policies": [{"PolicyName": policy, "PolicyDocument": document}]}},
        "Separate": {"Type": "AWS::IAM::Policy", "Properties": {
            "PolicyName": "separate", "Roles": [{"Ref": "Role"}], "PolicyDocument": document}}},
        "Outputs": {"Role": {"Value": {"Ref": "Role"}}}})


def role_state(cfn, iam) -> tuple[str, list[str], dict, dict]:
    stack = cfn.describe_stacks(StackName="roles")["Stacks"][0]
    role = stack["Outputs"][0]["OutputValue"]
    names = sorted(iam.list_role_policies(RoleName=role)["PolicyNames"])
    first = iam.get_role_policy(RoleName=role, PolicyName=names[0])["PolicyDocument"]
    trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    return role, names, first, trust


def test_stack_update_changes_a_roles_policies_and_trust(clean_sandbox):
    cfn, iam = boto3.client("cloudformation"), boto3.client("iam")
    cfn.create_stack(StackName="roles", TemplateBody=template("first", "ec2.amazonaws.com"),
                     Capabilities=["CAPABILITY_IAM"])
    role, names, document, trust = role_state(cfn, iam)
    assert names == ["first", "separate"]
    assert document["Statement"][0]["Action"] == "s3:GetObject"  # a document, not its text
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    cfn.update_stack(StackName="roles", TemplateBody=template("second", "lambda.amazonaws.com"),
                     Capabilities=["CAPABILITY_IAM"])
    again, names, _document, trust = role_state(cfn, iam)
    assert again == role
    assert names == ["second", "separate"]
    assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
