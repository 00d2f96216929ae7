"""Upgrading an account stack made by an older Kiln: what the old template created and the new one
leaves out must survive the update when AWS would keep it."""

from __future__ import annotations

from pathlib import Path

from accounts import bootstrap
from cloud.target import connect

TEMPLATE = Path(__file__).resolve().parent.parent / "cloud" / "templates" / "account.yaml"
# The account template before Auto Scaling's service-linked role left the stack.
OLD_ROLE = """  AutoScalingRole:
    Type: AWS::IAM::ServiceLinkedRole
    Properties:
      AWSServiceName: autoscaling.amazonaws.com
      Description: Auto Scaling launches Kiln's server groups with this role

"""


def test_an_account_made_with_the_stack_owned_auto_scaling_role_keeps_it(clean_sandbox,
                                                                          kiln_settings):
    """The old kiln-prod stack created AWSServiceRoleForAutoScaling; an update to today's
    template would delete it (and the key policy naming it would name nobody): bootstrap first
    sets DeletionPolicy Retain on it, so the update only lets go of it."""
    aws = connect(kiln_settings(), admin=True)
    spec, account, region = next(iter(bootstrap.targets(aws.settings, "prod", ("prod",))))
    place = bootstrap.place_for(aws.settings, aws, account, region)
    cfn = place.client("cloudformation")
    name = spec.name(aws.settings)
    old = TEMPLATE.read_text().replace("  AmiKey:\n", OLD_ROLE + "  AmiKey:\n", 1)
    cfn.create_stack(StackName=name, TemplateBody=old, Capabilities=bootstrap.CAPABILITIES,
                     Parameters=[{"ParameterKey": k, "ParameterValue": v}
                                 for k, v in spec.parameters(place).items()])
    cfn.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1})
    iam = place.client("iam")
    role = iam.get_role(RoleName="AWSServiceRoleForAutoScaling")["Role"]["RoleId"]

    bootstrap.run(aws.settings, aws, yes=True, parts=("prod",))

    assert iam.get_role(RoleName="AWSServiceRoleForAutoScaling")["Role"]["RoleId"] == role
    resources = cfn.describe_stack_resources(StackName=name)["StackResources"]
    assert "AutoScalingRole" not in [r["LogicalResourceId"] for r in resources]
    assert cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"] == "UPDATE_COMPLETE"
