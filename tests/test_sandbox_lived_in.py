"""sandbox/aws/lived_in.py: with kiln.sandbox.account_state lived-in, every account starts with
what a used AWS account holds (service-linked roles, the default VPC, another tool's resources),
in the build account and in an account reached by assuming a role, in any region."""

from __future__ import annotations

import json

import boto3
import pytest

from sandbox.aws.iam import identities
from sandbox.aws.lived_in import OTHER_NAME

PROD = "222222222222"


def session_in(account: str) -> boto3.Session:
    if account == identities.BUILD_ACCOUNT:
        return boto3.Session()
    role = f"arn:aws:iam::{account}:role/{identities.ORGANIZATION_ROLE}"
    keys = boto3.client("sts").assume_role(RoleArn=role, RoleSessionName="lived-in")["Credentials"]
    return boto3.Session(aws_access_key_id=keys["AccessKeyId"],
                         aws_secret_access_key=keys["SecretAccessKey"],
                         aws_session_token=keys["SessionToken"])


def service_roles(session: boto3.Session) -> set[str]:
    roles = session.client("iam").list_roles(PathPrefix="/aws-service-role/")["Roles"]
    return {role["RoleName"] for role in roles}


@pytest.mark.parametrize("account,region", [(identities.BUILD_ACCOUNT, "us-east-1"),
                                            (PROD, "eu-west-1")])
def test_a_lived_in_account_holds_what_a_used_one_does(lived_in, account, region):
    session = session_in(account)
    assert {"AWSServiceRoleForAutoScaling",
            "AWSServiceRoleForElasticLoadBalancing"} <= service_roles(session)
    ec2 = session.client("ec2", region_name=region)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])
    assert subnets["Subnets"] and all(s["DefaultForAz"] for s in subnets["Subnets"])
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["SecurityGroups"]
    assert {"default", OTHER_NAME} <= {group["GroupName"] for group in groups}
    scaling = session.client("autoscaling", region_name=region)
    (group,) = scaling.describe_auto_scaling_groups()["AutoScalingGroups"]
    assert group["AutoScalingGroupName"] == OTHER_NAME
    assert ("managed-by", "terraform") in {(tag["Key"], tag["Value"]) for tag in group["Tags"]}
    templates = ec2.describe_launch_templates()["LaunchTemplates"]
    assert [t["LaunchTemplateName"] for t in templates] == [OTHER_NAME]
    elb = session.client("elbv2", region_name=region)
    assert [t["TargetGroupName"] for t in elb.describe_target_groups()["TargetGroups"]] == [
        OTHER_NAME]


def test_a_reset_lived_in_account_is_lived_in_again_and_a_new_one_is_empty(lived_in):
    assert "AWSServiceRoleForAutoScaling" in service_roles(boto3.Session())
    lived_in.reset()
    assert "AWSServiceRoleForAutoScaling" in service_roles(boto3.Session())
    lived_in.set_account_state("new")
    lived_in.reset()
    assert service_roles(boto3.Session()) == set()
    assert boto3.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"] == []


def test_a_stack_creating_a_service_linked_role_the_account_has_rolls_back(lived_in):
    cfn = boto3.client("cloudformation")
    body = json.dumps({"Resources": {"Role": {"Type": "AWS::IAM::ServiceLinkedRole",
                                              "Properties": {
                                                  "AWSServiceName": "autoscaling.amazonaws.com"}}}})
    cfn.create_stack(StackName="linked", TemplateBody=body)
    stack = cfn.describe_stacks(StackName="linked")["Stacks"][0]
    assert stack["StackStatus"] == "ROLLBACK_COMPLETE"
    failed = [e for e in cfn.describe_stack_events(StackName="linked")["StackEvents"]
              if e["ResourceStatus"] == "CREATE_FAILED"]
    assert "has been taken in this account" in failed[0]["ResourceStatusReason"]


def test_a_service_linked_role_has_iams_name_for_its_service(clean_sandbox):
    iam = boto3.client("iam")
    role = iam.create_service_linked_role(
        AWSServiceName="elasticloadbalancing.amazonaws.com")["Role"]
    assert role["RoleName"] == "AWSServiceRoleForElasticLoadBalancing"
    assert role["Path"] == "/aws-service-role/elasticloadbalancing.amazonaws.com/"
    with pytest.raises(iam.exceptions.EntityAlreadyExistsException):
        iam.create_service_linked_role(AWSServiceName="elasticloadbalancing.amazonaws.com")
