"""sandbox/aws/ec2/security_groups.py: security groups decide what reaches an instance, as on AWS.

A load balancer reaches a target instance only on ports that one of the instance's security
groups admits from one of the balancer's groups (or from CIDRs covering the balancer's subnets),
and the balancer's groups let it out; anything else is dropped, so health checks time out
(Target.Timeout) and requests get 504. A VPC's default group admits its own members.
"""

import functools
import http.client
import threading

import boto3
import paramiko
import pytest

from cloud.errors import KilnError
from provisioner.provision import SshTarget, console_fingerprints, wait_for_ssh
from sandbox.sshd import Sshd, current_user
from tests.network_helpers import get, health, until
from tests.test_sandbox_instances import BAKE_KEY_TAGS, base_image, connect, ssh_group

APP_PORT = 8080


def _serving_instance(clean_sandbox, ec2, groups: list[str]) -> dict:
    pem = ec2.create_key_pair(KeyName="app", TagSpecifications=BAKE_KEY_TAGS)["KeyMaterial"]
    instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1, KeyName="app",
                                 SecurityGroupIds=[*groups, ssh_group(ec2)])["Instances"][0]
    with connect(clean_sandbox, instance, pem) as ssh:
        ssh.run(f"sudo -n setsid python3 -m http.server {APP_PORT} --directory /etc "
                ">/dev/null 2>&1 < /dev/null &", hide=True)
    return instance


def _rule(port: int, group: str) -> list[dict]:
    return [{"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
             "UserIdGroupPairs": [{"GroupId": group}]}]


def _default_vpc_with_a_group(ec2) -> tuple[dict, list[str], str]:
    """The default VPC, two of its subnets, and a new security group "lb" with no rules."""
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]][:2]
    group = ec2.create_security_group(GroupName="lb", Description="lb",
                                      VpcId=vpc["VpcId"])["GroupId"]
    return vpc, subnets, group


def _balanced(elbv2, name: str, vpc: str, subnets: list[str], instance: dict,
              groups: list[str] | None = None) -> tuple[dict, str]:
    """A load balancer on :80 forwarding to `instance`'s app port; (balancer, target group)."""
    extra = {"SecurityGroups": groups} if groups else {}
    balancer = elbv2.create_load_balancer(Name=name, Subnets=subnets, **extra)[
        "LoadBalancers"][0]
    group = elbv2.create_target_group(
        Name=name, Protocol="HTTP", Port=APP_PORT, VpcId=vpc, HealthCheckPath="/hostname",
        HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2, HealthyThresholdCount=2,
        UnhealthyThresholdCount=2)["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=group, Targets=[{"Id": instance["InstanceId"]}])
    elbv2.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=80,
                          DefaultActions=[{"Type": "forward", "TargetGroupArn": group}])
    return balancer, group


def _state(group: str, wanted: str):
    def check():
        assert [h["State"] for h in health(group)] == [wanted]
    return check


def test_the_instance_security_group_decides_what_the_load_balancer_reaches(clean_sandbox):
    ec2, elbv2 = boto3.client("ec2"), boto3.client("elbv2")
    vpc, subnets, lb_group = _default_vpc_with_a_group(ec2)
    ec2.authorize_security_group_ingress(GroupId=lb_group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    app_group = ec2.create_security_group(GroupName="app", Description="app",
                                          VpcId=vpc["VpcId"])["GroupId"]
    instance = _serving_instance(clean_sandbox, ec2, [app_group])
    balancer, group = _balanced(elbv2, "guarded", vpc["VpcId"], subnets, instance, [lb_group])
    state = functools.partial(_state, group)

    # No rule admits the app port (another port's rule does not count): dropped.
    ec2.authorize_security_group_ingress(GroupId=app_group, IpPermissions=_rule(22, lb_group))
    until(state("unhealthy"), timeout=30)
    assert health(group)[0]["Reason"] == "Target.Timeout"
    assert get(balancer["DNSName"], 80, "/hostname")[0] == 504
    # The server's log says which rule is missing (AWS only drops the packets).
    assert f"cannot reach {instance['InstanceId']} on port {APP_PORT}" in \
        clean_sandbox.moto.log.read_text()

    ec2.authorize_security_group_ingress(GroupId=app_group,
                                         IpPermissions=_rule(APP_PORT, lb_group))
    until(state("healthy"), timeout=30)
    assert get(balancer["DNSName"], 80, "/hostname")[0] == 200

    # The balancer's own group must let it out: an egress rule for another port only blocks it.
    ec2.revoke_security_group_egress(GroupId=lb_group, IpPermissions=[
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    ec2.authorize_security_group_egress(GroupId=lb_group, IpPermissions=_rule(443, app_group))
    until(state("unhealthy"), timeout=30)
    ec2.authorize_security_group_egress(GroupId=lb_group,
                                        IpPermissions=_rule(APP_PORT, app_group))
    until(state("healthy"), timeout=30)


def test_a_cidr_rule_must_cover_every_subnet_of_the_load_balancer(clean_sandbox):
    """Each of an ALB's nodes (one per subnet) sends to every target: a rule for one subnet's
    CIDR leaves the others' traffic dropped."""
    ec2, elbv2 = boto3.client("ec2"), boto3.client("elbv2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]
    found = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])
    subnets = found["Subnets"][:2]
    app_group = ec2.create_security_group(GroupName="app", Description="app",
                                          VpcId=vpc["VpcId"])["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=app_group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": APP_PORT, "ToPort": APP_PORT,
         "IpRanges": [{"CidrIp": subnets[0]["CidrBlock"]}]}])
    instance = _serving_instance(clean_sandbox, ec2, [app_group])
    _balancer, group = _balanced(elbv2, "cidr", vpc["VpcId"], [s["SubnetId"] for s in subnets],
                                 instance)
    state = functools.partial(_state, group)
    until(state("unhealthy"), timeout=30)
    ec2.authorize_security_group_ingress(GroupId=app_group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": APP_PORT, "ToPort": APP_PORT,
         "IpRanges": [{"CidrIp": vpc["CidrBlock"]}]}])
    until(state("healthy"), timeout=30)


def test_the_load_balancer_security_group_decides_which_clients_reach_a_listener(clean_sandbox):
    ec2, elbv2 = boto3.client("ec2"), boto3.client("elbv2")
    vpc, subnets, lb_group = _default_vpc_with_a_group(ec2)
    balancer = elbv2.create_load_balancer(Name="front", Subnets=subnets,
                                          SecurityGroups=[lb_group])["LoadBalancers"][0]
    fixed = {"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}
    elbv2.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP",
                          Port=8088, DefaultActions=[fixed])

    def refused(why: str) -> bool:
        try:
            get(balancer["DNSName"], 8088)
        except (ConnectionError, http.client.RemoteDisconnected):
            return True
        return False

    assert refused("none yet")
    assert f"drops 127.0.0.1 on port 8088: none of its security groups ({lb_group})" in \
        clean_sandbox.moto.log.read_text()
    ec2.authorize_security_group_ingress(GroupId=lb_group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8088, "ToPort": 8088,
         "IpRanges": [{"CidrIp": "203.0.113.0/24"}]}])
    assert refused("not the client's address")  # clients come from 127.0.0.1
    ec2.authorize_security_group_ingress(GroupId=lb_group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8000, "ToPort": 8100,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    assert get(balancer["DNSName"], 8088)[0] == 200


def test_a_vpc_default_group_admits_its_own_members(clean_sandbox):
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.12.0.0/16")["Vpc"]["VpcId"]
    [default] = ec2.describe_security_groups(Filters=[
        {"Name": "vpc-id", "Values": [vpc]},
        {"Name": "group-name", "Values": ["default"]}])["SecurityGroups"]
    assert [(p["IpProtocol"], [g["GroupId"] for g in p["UserIdGroupPairs"]])
            for p in default["IpPermissions"]] == [("-1", [default["GroupId"]])]


def test_ssh_reaches_an_instance_only_from_what_its_groups_admit_on_port_22(clean_sandbox):
    """A bake's session, like the load balancer's traffic, needs a rule: its SSH port
    (the sandbox sshd's here, which the bake opens as kiln.bake.ssh_port) from the host's
    address (127.0.0.1). The sandbox sshd refuses the instance's key otherwise, so
    the bake waits out its SSH timeout, as the dropped connection makes it wait on AWS."""
    ec2 = boto3.client("ec2")
    _vpc, _subnets, group = _default_vpc_with_a_group(ec2)
    pem = ec2.create_key_pair(KeyName="bake", TagSpecifications=BAKE_KEY_TAGS)["KeyMaterial"]
    instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1,
                                 KeyName="bake", SecurityGroupIds=[group])["Instances"][0]

    def session_opens() -> bool:
        ssh = connect(clean_sandbox, instance, pem)
        try:
            return ssh.run("true", hide=True).ok
        except paramiko.AuthenticationException:
            return False
        finally:
            ssh.client.close()  # a refused one too (see the next test)

    port = Sshd(clean_sandbox.state_dir).port  # the instances' SSH port here, as the bake's

    def ssh_from(cidr: str, on: int = port) -> list[dict]:
        return [{"IpProtocol": "tcp", "FromPort": on, "ToPort": on,
                 "IpRanges": [{"CidrIp": cidr}]}]

    assert not session_opens()  # no rule at all
    assert f"instance {instance['InstanceId']} admits SSH from nowhere" in \
        clean_sandbox.moto.log.read_text()
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=ssh_from("10.0.0.0/8"))
    assert not session_opens()  # a rule for other addresses
    ec2.authorize_security_group_ingress(GroupId=group,
                                         IpPermissions=ssh_from("127.0.0.1/32", on=port + 1))
    assert not session_opens()  # a rule for another port
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=ssh_from("127.0.0.0/8"))
    assert session_opens()
    ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=ssh_from("127.0.0.0/8"))
    assert not session_opens()


def test_a_refused_ssh_wait_leaves_no_connection_open(clean_sandbox):
    """Each attempt of the bake's SSH wait that the instance refuses is closed, not left in the
    instance sshd's pre-authentication queue until its grace time (ten of those and sshd drops
    new connections: MaxStartups)."""
    ec2 = boto3.client("ec2")
    _vpc, _subnets, group = _default_vpc_with_a_group(ec2)  # no rule: every attempt refused
    pem = ec2.create_key_pair(KeyName="bake", TagSpecifications=BAKE_KEY_TAGS)["KeyMaterial"]
    instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1,
                                 KeyName="bake", SecurityGroupIds=[group])["Instances"][0]
    console = ec2.get_console_output(InstanceId=instance["InstanceId"])["Output"]
    target = SshTarget(instance["InstanceId"], "127.0.0.1", Sshd(clean_sandbox.state_dir).port,
                       current_user(), pem, console_fingerprints(console))
    before = set(threading.enumerate())  # other tests' sessions in this process are theirs
    with pytest.raises(KilnError, match="not ready"):
        wait_for_ssh(target, timeout=3)
    transports = [t for t in threading.enumerate()
                  if isinstance(t, paramiko.Transport) and t not in before]
    for transport in transports:
        transport.join(timeout=2)  # a closed one ends its thread at once; an open one waits
    assert [t for t in transports if t.is_alive()] == []
