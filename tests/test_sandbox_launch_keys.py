"""Encrypted images launch through Auto Scaling only when the key allows its service-linked role
(sandbox/aws/autoscaling/launch_keys.py); key policies name only principals that exist
(sandbox/aws/iam/service_linked_roles.py)."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError

from accounts import bootstrap
from cloud import stacks
from tests.image_helpers import make_image

ACCOUNT = "123456789012"
SERVICE_ROLE = (f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/autoscaling.amazonaws.com/"
                "AWSServiceRoleForAutoScaling")
ROOT = {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
        "Action": "kms:*", "Resource": "*"}
FOR_AUTO_SCALING = [
    {"Effect": "Allow", "Principal": {"AWS": SERVICE_ROLE},
     "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                "kms:DescribeKey"], "Resource": "*"},
    {"Effect": "Allow", "Principal": {"AWS": SERVICE_ROLE}, "Action": "kms:CreateGrant",
     "Resource": "*", "Condition": {"Bool": {"kms:GrantIsForAWSResource": True}}}]


def _policy(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _group(autoscaling, ec2, image: str, name: str = "hello-web-v001") -> None:
    ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
        "ImageId": image, "InstanceType": "t3.small"})
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateName": name},
        MinSize=0, MaxSize=2, DesiredCapacity=1, AvailabilityZones=["us-east-1a"])


def _instances(autoscaling, name: str) -> list:
    return autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[name])["AutoScalingGroups"][0]["Instances"]


def test_a_key_policy_may_name_only_roles_that_exist(clean_sandbox):
    kms = boto3.client("kms")
    with pytest.raises(ClientError, match="MalformedPolicyDocumentException"):
        kms.create_key(Policy=_policy(ROOT, *FOR_AUTO_SCALING))
    boto3.client("iam").create_service_linked_role(AWSServiceName="autoscaling.amazonaws.com")
    kms.create_key(Policy=_policy(ROOT, *FOR_AUTO_SCALING))


def test_auto_scaling_launches_only_what_the_key_lets_its_role_use(clean_sandbox):
    kms, ec2 = boto3.client("kms"), boto3.client("ec2")
    autoscaling = boto3.client("autoscaling")
    boto3.client("iam").create_service_linked_role(AWSServiceName="autoscaling.amazonaws.com")
    key = kms.create_key(Policy=_policy(ROOT))["KeyMetadata"]["Arn"]
    _group(autoscaling, ec2, make_image(ec2, key))
    assert _instances(autoscaling, "hello-web-v001") == []
    (activity,) = autoscaling.describe_scaling_activities(
        AutoScalingGroupName="hello-web-v001")["Activities"]
    assert activity["StatusCode"] == "Failed"
    assert activity["StatusMessage"] == "Client.InternalError: Client error on launch"
    assert key in activity["Description"]

    kms.put_key_policy(KeyId=key, PolicyName="default",
                       Policy=_policy(ROOT, *FOR_AUTO_SCALING))
    autoscaling.set_desired_capacity(AutoScalingGroupName="hello-web-v001", DesiredCapacity=2)
    assert len(_instances(autoscaling, "hello-web-v001")) == 2


def test_a_grant_to_the_role_is_enough(clean_sandbox):
    kms, ec2 = boto3.client("kms"), boto3.client("ec2")
    autoscaling = boto3.client("autoscaling")
    boto3.client("iam").create_service_linked_role(AWSServiceName="autoscaling.amazonaws.com")
    key = kms.create_key(Policy=_policy(ROOT))["KeyMetadata"]["Arn"]
    kms.create_grant(KeyId=key, GranteePrincipal=SERVICE_ROLE,
                     Operations=["Decrypt", "CreateGrant", "GenerateDataKeyWithoutPlaintext"])
    _group(autoscaling, ec2, make_image(ec2, key))
    assert len(_instances(autoscaling, "hello-web-v001")) == 1


def test_the_account_stack_makes_the_role_its_key_allows(clean_sandbox, admin_aws):
    """Promoted images are encrypted with prod's key: the account stack creates Auto Scaling's
    role first and gives it the two documented statements, so server groups launch."""
    bootstrap.run(admin_aws.settings, admin_aws, yes=True, parts=("prod",))
    prod = admin_aws.admin("prod")
    key = stacks.output(prod, "prod", "AmiKmsKeyArn")
    policy = json.loads(prod.client("kms").get_key_policy(KeyId=key,
                                                          PolicyName="default")["Policy"])
    role = ("arn:aws:iam::222222222222:role/aws-service-role/autoscaling.amazonaws.com/"
            "AWSServiceRoleForAutoScaling")
    named = [s["Sid"] for s in policy["Statement"] if s["Principal"].get("AWS") == role]
    assert named == ["AutoScalingUsesKey", "AutoScalingAttachesVolumes"]
    ec2, autoscaling = prod.client("ec2"), prod.client("autoscaling")
    _group(autoscaling, ec2, make_image(ec2, key))
    assert len(_instances(autoscaling, "hello-web-v001")) == 1
