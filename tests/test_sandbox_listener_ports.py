"""sandbox/aws/elbv2/listeners.py: one listener per port on a load balancer."""

import json

import boto3
import pytest
from botocore.exceptions import ClientError


def fixed(status: str) -> list[dict]:
    return [{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": status}}]


@pytest.fixture
def balancer(clean_sandbox):
    ec2, elbv2 = boto3.client("ec2"), boto3.client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.11.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.11.{n}.0/24",
                                 AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
               for n, z in ((1, "a"), (2, "b"))]
    return elbv2.create_load_balancer(Name="ports", Subnets=subnets)["LoadBalancers"][0][
        "LoadBalancerArn"]


def test_a_second_listener_on_a_port_is_a_duplicate(balancer):
    elbv2 = boto3.client("elbv2")
    elbv2.create_listener(LoadBalancerArn=balancer, Protocol="HTTP", Port=80,
                          DefaultActions=fixed("503"))
    with pytest.raises(ClientError) as error:
        elbv2.create_listener(LoadBalancerArn=balancer, Protocol="HTTP", Port=80,
                              DefaultActions=fixed("404"))
    assert error.value.response["Error"]["Code"] == "DuplicateListener"
    listeners = elbv2.describe_listeners(LoadBalancerArn=balancer)["Listeners"]
    assert [(x["Port"], x["DefaultActions"][0]["FixedResponseConfig"]["StatusCode"])
            for x in listeners] == [(80, "503")]


def test_moving_a_listener_onto_a_taken_port_is_a_duplicate(balancer):
    elbv2 = boto3.client("elbv2")
    for port in (80, 8080):
        elbv2.create_listener(LoadBalancerArn=balancer, Protocol="HTTP", Port=port,
                              DefaultActions=fixed("503"))
    second = elbv2.describe_listeners(LoadBalancerArn=balancer)["Listeners"][1]["ListenerArn"]
    with pytest.raises(ClientError) as error:
        elbv2.modify_listener(ListenerArn=second, Port=80)
    assert error.value.response["Error"]["Code"] == "DuplicateListener"
    elbv2.modify_listener(ListenerArn=second, Port=8080)  # its own port: not a duplicate
    elbv2.modify_listener(ListenerArn=second, Port=8081)
    ports = sorted(x["Port"] for x in elbv2.describe_listeners(
        LoadBalancerArn=balancer)["Listeners"])
    assert ports == [80, 8081]


def listener(port: int, **extra) -> dict:
    return {"Type": "AWS::ElasticLoadBalancingV2::Listener", **extra,
            "Properties": {"LoadBalancerArn": {"Ref": "Balancer"}, "Port": port,
                           "Protocol": "HTTP", "DefaultActions": fixed("503")}}


def test_a_stack_update_hands_a_port_to_a_new_listener_after_moving_the_old_one(balancer):
    """CloudFormation updates in dependency order and deletes last (its cleanup phase): the
    listener that leaves port 80 does so before the new one that DependsOn it takes the port."""
    cfn, elbv2 = boto3.client("cloudformation"), boto3.client("elbv2")

    def template(resources: dict) -> str:
        return json.dumps({"Parameters": {"Balancer": {"Type": "String"}},
                           "Resources": resources})

    parameters = [{"ParameterKey": "Balancer", "ParameterValue": balancer}]
    cfn.create_stack(StackName="ports", TemplateBody=template({"Main": listener(80)}),
                     Parameters=parameters)
    main = cfn.describe_stack_resource(StackName="ports", LogicalResourceId="Main")[
        "StackResourceDetail"]["PhysicalResourceId"]
    cfn.update_stack(StackName="ports", Parameters=parameters, TemplateBody=template({
        "Redirect": listener(80, DependsOn="Main"), "Main": listener(443)}))
    ports = {x["ListenerArn"]: x["Port"]
             for x in elbv2.describe_listeners(LoadBalancerArn=balancer)["Listeners"]}
    assert ports[main] == 443 and sorted(ports.values()) == [80, 443]
