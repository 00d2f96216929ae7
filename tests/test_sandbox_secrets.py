"""sandbox/aws/cloudformation/secret_resources.py: CloudFormation makes AWS::SecretsManager::Secret
(moto skipped it), empty until PutSecretValue; and sandbox/aws/iam/access_control.py: Secrets
Manager uses a secret's customer managed key as the caller, so reading or writing its value needs
the key too (kms:ViaService secretsmanager, the secret's ARN in the encryption context)."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError

TEMPLATE = json.dumps({"Resources": {
    "Key": {"Type": "AWS::KMS::Key", "Properties": {"KeyPolicy": {
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": {"Fn::Sub": "arn:aws:iam::${AWS::AccountId}:root"}},
            "Action": "kms:*", "Resource": "*"}]}}},
    "Secret": {"Type": "AWS::SecretsManager::Secret", "Properties": {
        "Name": "app/signing-key", "KmsKeyId": {"Fn::GetAtt": ["Key", "Arn"]},
        "Tags": [{"Key": "kiln:managed-by", "Value": "kiln"}]}}},
    "Outputs": {"SecretArn": {"Value": {"Ref": "Secret"}}}})
SECRET_ARN = "arn:aws:secretsmanager:*:*:secret:app/signing-key-??????"


def writer_policy(with_key: bool) -> str:
    statements = [{"Effect": "Allow", "Action": ["secretsmanager:PutSecretValue",
                                                 "secretsmanager:GetSecretValue"],
                   "Resource": SECRET_ARN}]
    if with_key:
        statements.append({"Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                           "Resource": "*", "Condition": {"StringLike": {
                               "kms:ViaService": "secretsmanager.*.amazonaws.com",
                               "kms:EncryptionContext:SecretARN": SECRET_ARN}}})
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def test_a_stacks_secret_is_empty_and_its_value_needs_its_key(clean_sandbox):
    cloudformation = boto3.client("cloudformation")
    cloudformation.create_stack(StackName="secrets", TemplateBody=TEMPLATE)
    cloudformation.get_waiter("stack_create_complete").wait(StackName="secrets")
    arn = cloudformation.describe_stacks(StackName="secrets")["Stacks"][0]["Outputs"][0][
        "OutputValue"]
    secrets = boto3.client("secretsmanager")
    described = secrets.describe_secret(SecretId=arn)
    assert described["Name"] == "app/signing-key" and arn.startswith(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/signing-key-")
    assert {"Key": "kiln:managed-by", "Value": "kiln"} in described["Tags"]
    with pytest.raises(ClientError, match="ResourceNotFoundException.*can't find the specified "
                                          "secret value for staging label: AWSCURRENT"):
        secrets.get_secret_value(SecretId=arn)

    iam = boto3.client("iam")
    iam.create_user(UserName="writer")
    keys = iam.create_access_key(UserName="writer")["AccessKey"]
    writer = boto3.client("secretsmanager", aws_access_key_id=keys["AccessKeyId"],
                          aws_secret_access_key=keys["SecretAccessKey"])
    iam.put_user_policy(UserName="writer", PolicyName="secret", PolicyDocument=writer_policy(
        with_key=False))
    with pytest.raises(ClientError, match="not authorized to perform: kms:GenerateDataKey"):
        writer.put_secret_value(SecretId=arn, SecretString="value")
    iam.put_user_policy(UserName="writer", PolicyName="secret", PolicyDocument=writer_policy(
        with_key=True))
    writer.put_secret_value(SecretId=arn, SecretString="value")
    assert writer.get_secret_value(SecretId=arn)["SecretString"] == "value"

    cloudformation.delete_stack(StackName="secrets")
    cloudformation.get_waiter("stack_delete_complete").wait(StackName="secrets")
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        secrets.describe_secret(SecretId=arn)
