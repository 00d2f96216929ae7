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
    """The stack's resources, as both of CloudFormation's listings give them (a resource whose
    Condition is false is in neither)."""
    summaries = cloudformation.list_stack_resources(StackName=name)["StackResourceSummaries"]
    described = cloudformation.describe_stack_resources(StackName=name)["StackResources"]
    assert len(summaries) == len(described)
    return {r["LogicalResourceId"] for r in summaries} | {
        r["LogicalResourceId"] for r in described}


def test_conditions_made_of_conditions(clean_sandbox):
    cloudformation = boto3.client("cloudformation")
    cloudformation.create_stack(StackName="conditions", TemplateBody=TEMPLATE)
    cloudformation.get_waiter("stack_create_complete").wait(StackName="conditions")
    assert made(cloudformation, "conditions") == {"Vpc", "WithBoth", "WithEither"}
    cloudformation.create_stack(StackName="without", TemplateBody=TEMPLATE, Parameters=[
        {"ParameterKey": "Hook", "ParameterValue": "false"}])
    cloudformation.get_waiter("stack_create_complete").wait(StackName="without")
    assert made(cloudformation, "without") == {"Vpc", "WithNotBoth"}


LATER = """
Parameters:
  ExtraCidr: {Type: String, Default: ""}
Conditions:
  HasExtra: !Not [!Equals [!Ref ExtraCidr, ""]]
Resources:
  Vpc: {Type: AWS::EC2::VPC, Properties: {CidrBlock: 10.9.0.0/16}}
  ExtraSubnet: {Type: AWS::EC2::Subnet, Condition: HasExtra,
                Properties: {VpcId: !Ref Vpc, CidrBlock: !Ref ExtraCidr}}
  ExtraTable: {Type: AWS::EC2::RouteTable, Condition: HasExtra, Properties: {VpcId: !Ref Vpc}}
  ExtraRoutes: {Type: AWS::EC2::SubnetRouteTableAssociation, Condition: HasExtra,
                Properties: {SubnetId: !Ref ExtraSubnet, RouteTableId: !Ref ExtraTable}}
Outputs:
  VpcId: {Value: !Ref Vpc}
  ExtraSubnetId: {Condition: HasExtra, Value: !Ref ExtraSubnet}
"""


def test_a_change_set_that_turns_a_condition_on_makes_its_resources(clean_sandbox):
    """As `invoke bootstrap` adds the first app's pipeline to a build stack made before it: the
    same template, a parameter that turns a condition on. Every resource of the condition is
    made (moto made only those using the changed parameter, and left the others to be made
    when first listed, which failed), and the condition's outputs appear; turned off again,
    they go."""
    cloudformation = boto3.client("cloudformation")
    cloudformation.create_stack(StackName="later", TemplateBody=LATER)
    cloudformation.get_waiter("stack_create_complete").wait(StackName="later")

    def update(cidr: str) -> tuple[set[str], set[str]]:
        name = f"cidr-{len(cidr)}"
        cloudformation.create_change_set(
            StackName="later", ChangeSetName=name, TemplateBody=LATER, ChangeSetType="UPDATE",
            Parameters=[{"ParameterKey": "ExtraCidr", "ParameterValue": cidr}])
        cloudformation.get_waiter("change_set_create_complete").wait(
            StackName="later", ChangeSetName=name)
        cloudformation.execute_change_set(StackName="later", ChangeSetName=name)
        cloudformation.get_waiter("stack_update_complete").wait(StackName="later")
        stack = cloudformation.describe_stacks(StackName="later")["Stacks"][0]
        return made(cloudformation, "later"), {o["OutputKey"] for o in stack["Outputs"]}

    assert update("10.9.1.0/24") == ({"Vpc", "ExtraSubnet", "ExtraTable", "ExtraRoutes"},
                                     {"VpcId", "ExtraSubnetId"})
    subnets = boto3.client("ec2").describe_subnets(
        Filters=[{"Name": "cidr-block", "Values": ["10.9.1.0/24"]}])["Subnets"]
    assert len(subnets) == 1
    assert update("") == ({"Vpc"}, {"VpcId"})
    assert not boto3.client("ec2").describe_subnets(
        Filters=[{"Name": "cidr-block", "Values": ["10.9.1.0/24"]}])["Subnets"]
