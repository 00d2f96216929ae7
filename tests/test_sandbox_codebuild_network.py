"""sandbox/aws/codebuild: a build reaches load balancers as a build on AWS does. Without a
VpcConfig it has the internet: an internet-facing balancer's DNS name answers it through the
balancer's listeners and security groups, an internal one does not. With a VpcConfig it reaches
what an instance of its subnet reaches: the internal balancers of its VPC (from its private
address), the internet-facing ones through its subnet's NAT gateway (from the NAT's address),
nothing of another VPC. A listener made while a build runs answers it."""

from __future__ import annotations

import io
import json
import time
import zipfile

import boto3

from tests.network_helpers import all_healthy, forward

ROLE_TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "codebuild.amazonaws.com"},
    "Action": "sts:AssumeRole"}]}
LOGS = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Resource": "*",
    "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
               "s3:GetObject"]}]}
VPC_BUILD = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Resource": "*",
    "Action": ["ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces",
               "ec2:DeleteNetworkInterface", "ec2:DescribeSubnets",
               "ec2:DescribeSecurityGroups", "ec2:DescribeDhcpOptions", "ec2:DescribeVpcs",
               "ec2:CreateNetworkInterfacePermission"]}]}


def fetch(name: str, url: str) -> list[str]:
    """Buildspec commands that GET `url` with curl and with Python, and say what came back."""
    python = ("import urllib.request as u; "
              f"print(u.urlopen({url!r}, timeout=3).read().decode().strip())")
    return [f'echo "{name} curl=$(curl -s --max-time 3 {url} || echo failed)"',
            f'echo "{name} python=$(python3 -c {json.dumps(python)} 2>/dev/null || echo failed)"']


def run_build(commands: list[str], vpc_config: dict | None = None, building=None) -> str:
    """A project of `commands` (its source a small archive), one build of it; its log.
    `building()` is called once the build runs its BUILD phase."""
    iam, builds = boto3.client("iam"), boto3.client("codebuild")
    role = iam.create_role(RoleName="reach-build",
                           AssumeRolePolicyDocument=json.dumps(ROLE_TRUST))["Role"]["Arn"]
    iam.put_role_policy(RoleName="reach-build", PolicyName="logs", PolicyDocument=json.dumps(LOGS))
    if vpc_config:
        iam.put_role_policy(RoleName="reach-build", PolicyName="vpc",
                            PolicyDocument=json.dumps(VPC_BUILD))
    spec = "\n".join(["version: 0.2", "phases:", "  build:", "    commands:",
                      *(f"      - {json.dumps(c)}" for c in commands)])
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="reach-source")
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("README", "a build that reaches balancers\n")
    s3.put_object(Bucket="reach-source", Key="source.zip", Body=package.getvalue())
    project = {"name": "reach", "source": {"type": "S3", "location": "reach-source/source.zip",
                                           "buildspec": spec},
               "artifacts": {"type": "NO_ARTIFACTS"}, "serviceRole": role,
               "environment": {"type": "LINUX_CONTAINER", "computeType": "BUILD_GENERAL1_SMALL",
                               "image": "aws/codebuild/amazonlinux-x86_64-standard:5.0"}}
    if vpc_config:
        project["vpcConfig"] = vpc_config
    builds.create_project(**project)
    build_id = builds.start_build(projectName="reach")["build"]["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        [build] = builds.batch_get_builds(ids=[build_id])["builds"]
        if building is not None and build["currentPhase"] == "BUILD":
            building()
            building = None
        if build["buildComplete"]:
            break
        time.sleep(0.05)
    assert build["buildStatus"] == "SUCCEEDED", build["phases"]
    events = boto3.client("logs").get_log_events(logGroupName="/aws/codebuild/reach",
                                                 logStreamName=build_id.partition(":")[2])
    return "\n".join(e["message"] for e in events["events"])


def answers(log: str, name: str) -> set[str]:
    """What the build's curl and Python got from the balancer `name`."""
    return {line.split("=", 1)[1] for line in log.splitlines()
            if line.startswith(f"{name} curl=") or line.startswith(f"{name} python=")}


def balancer(lb, name: str, scheme: str, subnets: list[str], cidr: str, port: int = 80) -> str:
    """Another balancer forwarding to the `lb` fixture's blue app, its listener on `port`
    admitting clients from `cidr` only; its DNS name."""
    ec2, elbv2 = boto3.client("ec2"), boto3.client("elbv2")
    vpc = ec2.describe_subnets(SubnetIds=subnets[:1])["Subnets"][0]["VpcId"]
    group = ec2.create_security_group(GroupName=f"{name}-clients", Description="its clients",
                                      VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": cidr}]}])
    made = elbv2.create_load_balancer(Name=name, Subnets=subnets, Scheme=scheme,
                                      SecurityGroups=[group])["LoadBalancers"][0]
    elbv2.create_listener(LoadBalancerArn=made["LoadBalancerArn"], Protocol="HTTP", Port=port,
                          DefaultActions=[forward(lb["groups"], blue=1)])
    return made["DNSName"]


def subnets_of(lb) -> list[str]:
    found = boto3.client("elbv2").describe_load_balancers(LoadBalancerArns=[lb["arn"]])
    return [zone["SubnetId"] for zone in found["LoadBalancers"][0]["AvailabilityZones"]]


def test_a_build_without_a_vpc_reaches_internet_facing_balancers_only(lb, clean_sandbox):
    clean_sandbox.set_time_scale(None)
    subnets = subnets_of(lb)
    internal = balancer(lb, "inside", "internal", subnets, "0.0.0.0/0")
    private_only = balancer(lb, "private-clients", "internet-facing", subnets, "10.0.0.0/8")
    all_healthy(lb)
    log = run_build([*fetch("public", f"http://{lb['dns']}/"),
                     *fetch("internal", f"http://{internal}/"),
                     *fetch("refused", f"http://{private_only}/")])
    assert answers(log, "public") <= {"blue", "green"} and answers(log, "public"), log
    assert answers(log, "internal") == {"failed"}, log  # no route into a VPC
    assert answers(log, "refused") == {"failed"}, log  # its groups admit no public address


def private_subnet(lb) -> tuple[str, list[str], str, str]:
    """A subnet of the `lb` fixture's VPC whose default route leads to a NAT gateway: the VPC,
    the balancer's subnets, the subnet, the NAT gateway's public address."""
    ec2 = boto3.client("ec2")
    subnets = subnets_of(lb)
    vpc = ec2.describe_subnets(SubnetIds=subnets[:1])["Subnets"][0]["VpcId"]
    private = ec2.create_subnet(VpcId=vpc, CidrBlock="10.8.9.0/24",
                                AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    address = ec2.allocate_address(Domain="vpc")
    nat = ec2.create_nat_gateway(SubnetId=subnets[0], AllocationId=address["AllocationId"])[
        "NatGateway"]["NatGatewayId"]
    table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    ec2.associate_route_table(RouteTableId=table, SubnetId=private)
    return vpc, subnets, private, address["PublicIp"]


def test_a_build_in_a_vpc_reaches_its_vpcs_balancers_and_the_internet_through_its_nat(
        lb, clean_sandbox):
    clean_sandbox.set_time_scale(None)
    ec2 = boto3.client("ec2")
    vpc, subnets, private, nat_address = private_subnet(lb)
    build_group = ec2.create_security_group(GroupName="build", Description="the build",
                                            VpcId=vpc)["GroupId"]
    internal = balancer(lb, "inside", "internal", subnets, "10.8.9.0/24")
    through_nat = balancer(lb, "nat-clients", "internet-facing", subnets, f"{nat_address}/32")
    other_vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    elsewhere = balancer(lb, "elsewhere", "internal", [
        ec2.create_subnet(VpcId=other_vpc, CidrBlock=f"10.9.{n}.0/24",
                          AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
        for n, z in ((1, "a"), (2, "b"))], "0.0.0.0/0")
    all_healthy(lb)
    log = run_build([*fetch("internal", f"http://{internal}/"),
                     *fetch("nat", f"http://{through_nat}/"),
                     *fetch("elsewhere", f"http://{elsewhere}/")],
                    vpc_config={"vpcId": vpc, "subnets": [private],
                                "securityGroupIds": [build_group]})
    assert answers(log, "internal") == {"blue"}, log  # from its address in 10.8.9.0/24
    assert answers(log, "nat") == {"blue"}, log  # from the NAT gateway's address
    assert answers(log, "elsewhere") == {"failed"}, log  # another VPC's: no route


def test_a_vpc_builds_security_groups_decide_as_an_instances_do(lb, clean_sandbox):
    """Its outbound rules let it out to its VPC only; a balancer admitting its group (a rule
    naming the group, not an address) answers it."""
    clean_sandbox.set_time_scale(None)
    ec2 = boto3.client("ec2")
    vpc, subnets, private, nat_address = private_subnet(lb)
    build_group = ec2.create_security_group(GroupName="build", Description="the build",
                                            VpcId=vpc)["GroupId"]
    everywhere = [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    ec2.revoke_security_group_egress(GroupId=build_group, IpPermissions=everywhere)
    ec2.authorize_security_group_egress(GroupId=build_group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
         "IpRanges": [{"CidrIp": "10.8.0.0/16"}]}])
    by_group = balancer(lb, "by-group", "internal", subnets, "192.0.2.0/24")
    ec2.authorize_security_group_ingress(
        GroupId=balancer_group(by_group), IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
             "UserIdGroupPairs": [{"GroupId": build_group}]}])
    through_nat = balancer(lb, "nat-clients", "internet-facing", subnets, f"{nat_address}/32")
    all_healthy(lb)
    log = run_build([*fetch("group", f"http://{by_group}/"),
                     *fetch("nat", f"http://{through_nat}/")],
                    vpc_config={"vpcId": vpc, "subnets": [private],
                                "securityGroupIds": [build_group]})
    assert answers(log, "group") == {"blue"}, log
    assert answers(log, "nat") == {"failed"}, log  # its groups let nothing out to the internet


def balancer_group(dns_name: str) -> str:
    [found] = [b for b in boto3.client("elbv2").describe_load_balancers()["LoadBalancers"]
               if b["DNSName"] == dns_name]
    return found["SecurityGroups"][0]


def test_a_listener_made_while_a_build_runs_answers_it(lb, clean_sandbox):
    clean_sandbox.set_time_scale(None)
    ec2, elbv2 = boto3.client("ec2"), boto3.client("elbv2")
    subnets = subnets_of(lb)
    vpc = ec2.describe_subnets(SubnetIds=subnets[:1])["Subnets"][0]["VpcId"]
    group = ec2.create_security_group(GroupName="later", Description="its clients",
                                      VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    later = elbv2.create_load_balancer(Name="later", Subnets=subnets,
                                       SecurityGroups=[group])["LoadBalancers"][0]
    all_healthy(lb)

    def listen():
        elbv2.create_listener(LoadBalancerArn=later["LoadBalancerArn"], Protocol="HTTP",
                              Port=8080, DefaultActions=[forward(lb["groups"], blue=1)])

    url = f"http://{later['DNSName']}:8080/"
    # At most 10 s: the listener is made once the build runs its commands.
    log = run_build([f"for i in $(seq 200); do curl -sf --max-time 1 {url} && break; "
                     "sleep 0.05; done",
                     *fetch("later", url)], building=listen)
    assert answers(log, "later") == {"blue"}, log
