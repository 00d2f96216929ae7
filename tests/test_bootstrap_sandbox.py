"""The sandbox's CloudFormation (sandbox/aws/cloudformation/stacks.py), through the moto server.

Plain boto3 calls, no Kiln code: each test creates a stack the way AWS documents and reads the
resulting resources back.
"""

import json

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

BUCKET_TEMPLATE = """
Parameters:
  Versioning: {Type: String, Default: Enabled}
Resources:
  Bucket:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: cfn-patch-bucket
      VersioningConfiguration: {Status: !Ref Versioning}
      PublicAccessBlockConfiguration:
        BlockPublicAcls: true
        IgnorePublicAcls: true
        BlockPublicPolicy: true
        RestrictPublicBuckets: true
  Policy:
    Type: AWS::S3::BucketPolicy
    Properties:
      Bucket: !Ref Bucket
      PolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Sid: Loopback
            Effect: Allow
            Principal: "*"
            Action: s3:GetObject
            Resource: !Sub "arn:aws:s3:::${Bucket}/*"
            Condition: {IpAddress: {aws:SourceIp: 127.0.0.1/32}}
Outputs:
  BucketName: {Value: !Ref Bucket}
"""

KEY_TEMPLATE = """
Parameters:
  Grantee: {Type: String, Default: "arn:aws:iam::222222222222:root"}
Resources:
  Key:
    Type: AWS::KMS::Key
    Properties:
      Description: cfn patch key
      EnableKeyRotation: true
      Tags: [{Key: kiln:role, Value: test}]
      KeyPolicy:
        Version: "2012-10-17"
        Statement:
          - Sid: Share
            Effect: Allow
            Principal: {AWS: !Ref Grantee}
            Action: kms:Decrypt
            Resource: "*"
          - Sid: AccountAdministers
            Effect: Allow
            Principal: {AWS: !Sub "arn:aws:iam::${AWS::AccountId}:root"}
            Action: kms:*
            Resource: "*"
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: cfn-patch-table
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: K, AttributeType: S}]
      KeySchema: [{AttributeName: K, KeyType: HASH}]
      TimeToLiveSpecification: {AttributeName: ExpiresAt, Enabled: true}
  Vpc:
    Type: AWS::EC2::VPC
    Properties: {CidrBlock: 10.1.0.0/16}
  Group:
    Type: AWS::Logs::LogGroup
    Properties: {LogGroupName: !Sub "/cfn-patch/${Grantee}"}
Outputs:
  KeyArn: {Value: !GetAtt Key.Arn}
  VpcId: {Value: !Ref Vpc}
"""


@pytest.fixture
def cfn(clean_sandbox):
    return boto3.client("cloudformation", region_name="us-east-1")


def change_set(cfn, name, body, kind, **parameters):
    created = cfn.create_change_set(
        StackName="patch", ChangeSetName=name, TemplateBody=body, ChangeSetType=kind,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Tags=[{"Key": "kiln:managed-by", "Value": "kiln"}])
    return created["Id"], cfn.describe_change_set(ChangeSetName=created["Id"])


def test_bucket_versioning_public_access_block_and_policy_follow_the_template(cfn):
    cfn.create_stack(StackName="patch", TemplateBody=BUCKET_TEMPLATE)
    s3 = boto3.client("s3", region_name="us-east-1")
    assert s3.get_bucket_versioning(Bucket="cfn-patch-bucket")["Status"] == "Enabled"
    block = s3.get_public_access_block(Bucket="cfn-patch-bucket")
    assert all(block["PublicAccessBlockConfiguration"].values())
    policy = json.loads(s3.get_bucket_policy(Bucket="cfn-patch-bucket")["Policy"])
    assert policy["Statement"][0]["Condition"] == {"IpAddress": {"aws:SourceIp": "127.0.0.1/32"}}
    resources = {r["LogicalResourceId"]: r["ResourceType"] for r in
                 cfn.list_stack_resources(StackName="patch")["StackResourceSummaries"]}
    assert resources["Policy"] == "AWS::S3::BucketPolicy"

    cfn.update_stack(StackName="patch", TemplateBody=BUCKET_TEMPLATE,
                     Parameters=[{"ParameterKey": "Versioning", "ParameterValue": "Suspended"}])
    assert s3.get_bucket_versioning(Bucket="cfn-patch-bucket")["Status"] == "Suspended"

    without_policy = yaml.safe_load(BUCKET_TEMPLATE.replace("!Ref", "").replace("!Sub", ""))
    del without_policy["Resources"]["Policy"]
    without_policy["Resources"]["Bucket"]["Properties"]["VersioningConfiguration"] = {
        "Status": "Suspended"}
    without_policy["Outputs"]["BucketName"]["Value"] = {"Ref": "Bucket"}
    cfn.update_stack(StackName="patch", TemplateBody=json.dumps(without_policy),
                     Parameters=[{"ParameterKey": "Versioning", "ParameterValue": "Suspended"}])
    with pytest.raises(ClientError, match="NoSuchBucketPolicy"):
        s3.get_bucket_policy(Bucket="cfn-patch-bucket")


def test_kms_key_policy_as_an_object_tags_and_table_ttl(cfn):
    cfn.create_stack(StackName="patch", TemplateBody=KEY_TEMPLATE)
    outputs = {o["OutputKey"]: o["OutputValue"]
               for o in cfn.describe_stacks(StackName="patch")["Stacks"][0]["Outputs"]}
    kms = boto3.client("kms", region_name="us-east-1")
    policy = json.loads(kms.get_key_policy(KeyId=outputs["KeyArn"], PolicyName="default")["Policy"])
    assert policy["Statement"][0]["Principal"] == {"AWS": "arn:aws:iam::222222222222:root"}
    assert kms.list_resource_tags(KeyId=outputs["KeyArn"])["Tags"] == [
        {"TagKey": "kiln:role", "TagValue": "test"}]
    ttl = boto3.client("dynamodb", region_name="us-east-1").describe_time_to_live(
        TableName="cfn-patch-table")["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "ExpiresAt"}

    cfn.update_stack(StackName="patch", TemplateBody=KEY_TEMPLATE, Parameters=[
        {"ParameterKey": "Grantee", "ParameterValue": "arn:aws:iam::333333333333:root"}])
    policy = json.loads(kms.get_key_policy(KeyId=outputs["KeyArn"], PolicyName="default")["Policy"])
    assert policy["Statement"][0]["Principal"] == {"AWS": "arn:aws:iam::333333333333:root"}


def test_change_sets_give_outputs_tags_and_lists_parameter_changes(cfn):
    created, described = change_set(cfn, "one", KEY_TEMPLATE, "CREATE")
    assert {c["ResourceChange"]["Action"] for c in described["Changes"]} == {"Add"}
    cfn.execute_change_set(ChangeSetName=created)
    stack = cfn.describe_stacks(StackName="patch")["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert set(outputs) == {"KeyArn", "VpcId"}
    vpc = boto3.client("ec2", region_name="us-east-1").describe_vpcs(
        VpcIds=[outputs["VpcId"]])["Vpcs"][0]
    tags = {t["Key"]: t["Value"] for t in vpc["Tags"]}
    assert tags["kiln:managed-by"] == "kiln"
    assert tags["aws:cloudformation:logical-id"] == "Vpc"
    assert cfn.list_change_sets(StackName="patch")["Summaries"] == []

    # Nothing to change: a FAILED change set, as AWS answers, not an error.
    same, described = change_set(cfn, "two", KEY_TEMPLATE, "UPDATE")
    assert described["Status"] == "FAILED"
    assert "didn't contain changes" in described["StatusReason"]
    cfn.delete_change_set(ChangeSetName=same)

    # A parameter used through Ref and Fn::Sub: both resources are listed as Modify.
    _, described = change_set(cfn, "three", KEY_TEMPLATE, "UPDATE",
                              Grantee="arn:aws:iam::444444444444:root")
    assert sorted((c["ResourceChange"]["Action"], c["ResourceChange"]["LogicalResourceId"])
                  for c in described["Changes"]) == [("Modify", "Group"), ("Modify", "Key")]


CONDITIONAL = """
Parameters:
  Cidr: {Type: String, Default: ""}
Conditions:
  HasSubnet: !Not [!Equals [!Ref Cidr, ""]]
Resources:
  Vpc:
    Type: AWS::EC2::VPC
    Properties: {CidrBlock: 10.2.0.0/16}
  Subnet:
    Type: AWS::EC2::Subnet
    Condition: HasSubnet
    Properties: {VpcId: !Ref Vpc, CidrBlock: !Ref Cidr}
"""


def test_change_sets_leave_out_resources_whose_condition_is_false(cfn):
    def listed(described) -> list:
        return sorted((c["ResourceChange"]["Action"], c["ResourceChange"]["LogicalResourceId"])
                      for c in described["Changes"])

    created, described = change_set(cfn, "one", CONDITIONAL, "CREATE")
    assert listed(described) == [("Add", "Vpc")]  # as on AWS: no Subnet to create
    cfn.execute_change_set(ChangeSetName=created)
    added, described = change_set(cfn, "two", CONDITIONAL, "UPDATE", Cidr="10.2.1.0/24")
    assert listed(described) == [("Add", "Subnet")]
    cfn.execute_change_set(ChangeSetName=added)
    _, described = change_set(cfn, "three", CONDITIONAL, "UPDATE", Cidr="")
    assert listed(described) == [("Remove", "Subnet")]
