"""sandbox/aws/cloudformation/conditions.py: a condition made of other conditions (`!Condition`
inside `!And`, `!Or` or `!Not`, as YAML templates write it) is evaluated as CloudFormation does;
moto's YAML reading made each `Fn::Condition` and the combined condition silently false."""

from __future__ import annotations

import boto3

TEMPLATE = """
Parameters:
  Egress: {Type: String, Default: endpoints}
  Hook: {Type: String, Default: "true"}
Conditions:
  UsesEndpoints: !Equals [!Ref Egress, endpoints]
  HasHook: !Equals [!Ref Hook, "true"]
  Both: !And [!Condition UsesEndpoints, !Condition HasHook]
  Either: !Or [!Condition HasHook, !Equals [!Ref Egress, nat]]
  NotBoth: !Not [!Condition Both]
Resources:
  Vpc: {Type: AWS::EC2::VPC, Properties: {CidrBlock: 10.9.0.0/16}}
  WithBoth: {Type: AWS::EC2::SecurityGroup, Condition: Both,
             Properties: {GroupDescription: both, VpcId: !Ref Vpc}}
  WithEither: {Type: AWS::EC2::SecurityGroup, Condition: Either,
               Properties: {GroupDescription: either, VpcId: !Ref Vpc}}
  WithNotBoth: {Type: AWS::EC2::SecurityGroup, Condition: NotBoth,
                Properties: {GroupDescription: not-both, VpcId: !Ref Vpc}}
"""


def made(cloudformation, name: str) -> set[str]:
    summaries = cloudformation.list_stack_resources(StackName=name)["StackResourceSummaries"]
    return {r["LogicalResourceId"] for r in summaries if r.get("LogicalResourceId")}


def test_conditions_made_of_conditions(clean_sandbox):
    cloudformation = boto3.client("cloudformation")
    cloudformation.create_stack(StackName="conditions", TemplateBody=TEMPLATE)
    cloudformation.get_waiter("stack_create_complete").wait(StackName="conditions")
    assert made(cloudformation, "conditions") == {"Vpc", "WithBoth", "WithEither"}
    cloudformation.create_stack(StackName="without", TemplateBody=TEMPLATE, Parameters=[
        {"ParameterKey": "Hook", "ParameterValue": "false"}])
    cloudformation.get_waiter("stack_create_complete").wait(StackName="without")
    assert made(cloudformation, "without") == {"Vpc", "WithNotBoth"}
