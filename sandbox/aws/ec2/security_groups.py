"""Security groups decide what a load balancer reaches, as on AWS.

AWS behaviour mirrored here (https://docs.aws.amazon.com/elasticloadbalancing/latest/application/
load-balancer-update-security-groups.html, https://docs.aws.amazon.com/vpc/latest/userguide/
default-security-group.html):
  - A load balancer's traffic and health checks reach a target instance only when one of the
    instance's security groups admits TCP on that port from one of the balancer's groups, or from
    CIDRs that cover every subnet of the balancer (each subnet's node sends to every target),
    and one of the balancer's groups lets it out to the instance (its group or its address).
    Anything else is dropped: the health check times out (Target.Timeout) and a request waits
    out the connection timeout and gets 504.
  - A balancer or an instance named in no group is in its VPC's default group, and a VPC's
    default group admits all traffic from its own members (moto made it with no inbound rule).
  - A bake's SSH session reaches an instance only from addresses its groups admit on its SSH
    port, which in the sandbox is the sandbox sshd's (the bake's `kiln.bake.ssh_port`): the
    sshd's key line for the instance carries them as `from=`, rewritten when the groups'
    inbound rules change; with none, the key opens no session.
  - A client reaches a listener only when one of the balancer's groups admits its address on
    the listener's port (clients come from 127.0.0.1 here; 0.0.0.0/0 admits them); otherwise
    the connection is closed unanswered (on AWS it is dropped and the client times out).
The load balancers check every connection, and their process has a changed rule before the call
that changed it returns (sandbox.network.supervisor), so it takes effect on the next one.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

from sandbox.aws import quotas, seams

_noted: set[str] = set()


def apply(state_dir: Path) -> None:
    from moto.ec2.models.security_groups import SecurityGroupBackend

    # Each call checks its input as AWS does (sandbox.aws.quotas) before moto's, then keeps what
    # the sandbox builds on the groups in step.
    seams.wrap(SecurityGroupBackend, "create_security_group", _create_security_group,
               signature="(self, name: str, description: str, vpc_id: str | None = None, tags: "
                         "dict[str, str] | None = None, force: bool = False, is_default: bool | "
                         "None = None) -> moto.ec2.models.security_groups.SecurityGroup",
               owner=__name__)
    seams.wrap(SecurityGroupBackend, "authorize_security_group_ingress",
               lambda moto: _readmitting(_checked_rules(moto), state_dir),
               signature=f"(self, {RULE_ARGS}, sgrule_tags: dict[str, str] | None = None, "
                         f"source_groups: list[dict[str, str]] | None = None, {RULE_TAIL}) -> "
                         f"{RULES_AND_GROUP}", owner=__name__)
    seams.wrap(SecurityGroupBackend, "authorize_security_group_egress", _checked_rules,
               signature=f"(self, {RULE_ARGS}, sgrule_tags: dict[str, str] | None = None, "
                         f"source_groups: list[dict[str, typing.Any]] | None = None, "
                         f"{RULE_TAIL}) -> {RULES_AND_GROUP}", owner=__name__)
    seams.wrap(SecurityGroupBackend, "revoke_security_group_ingress",
               lambda moto: _readmitting(moto, state_dir),
               signature=f"(self, {RULE_ARGS}, source_groups: list[dict[str, typing.Any]] | None "
                         f"= None, {RULE_TAIL}) -> None", owner=__name__)


# The parameters moto's rule calls share, as inspect prints them.
RULE_ARGS = ("group_name_or_id: str, ip_protocol: str, from_port: str, to_port: str, ip_ranges: "
             "list[typing.Any]")
RULE_TAIL = ("prefix_list_ids: list[dict[str, str]] | None = None, security_rule_ids: list[str] "
             "| None = None, vpc_id: str | None = None")
RULES_AND_GROUP = ("tuple[list[moto.ec2.models.security_groups.SecurityGroupRule], "
                   "moto.ec2.models.security_groups.SecurityGroup]")


def _create_security_group(moto):
    from moto.ec2.models.security_groups import SecurityGroupRule

    def create_security_group(self, name, description, vpc_id=None, tags=None, force=False,
                              is_default=None):
        quotas.check_security_group(description)
        group = moto(self, name, description, vpc_id=vpc_id, tags=tags, force=force,
                     is_default=is_default)
        if is_default and not group.ingress_rules:
            group.ingress_rules.append(SecurityGroupRule(
                self, "-1", group.id, None, None, None,
                source_group={"GroupId": group.id, "UserId": self.account_id}, is_egress=False))
        return group

    return create_security_group


def _checked_rules(moto):
    def checked(self, group_name_or_id, ip_protocol, from_port, to_port, ip_ranges, *args,
                **kwargs):
        quotas.check_rules(ip_ranges)
        return moto(self, group_name_or_id, ip_protocol, from_port, to_port, ip_ranges, *args,
                    **kwargs)

    return checked


def ssh_sources(state_dir: Path, ec2, instance) -> list[str]:
    """The CIDRs the instance's security groups admit on its SSH port: the sandbox sshd's,
    which stands for it (a bake connects there, and opens its group for that port)."""
    from sandbox.sshd import Sshd

    port = Sshd(state_dir).port
    groups = _instance_groups(ec2, instance)
    sources = sorted({rule.ip_range["CidrIp"] for group in groups
                      for rule in group.ingress_rules
                      if port and _carries(rule, port) and rule.ip_range.get("CidrIp")})
    if not sources:
        _note(f"instance {instance.id} admits SSH from nowhere: none of its security groups "
              f"({', '.join(g.id for g in groups)}) has a rule for TCP port {port}, the "
              "sandbox sshd's (kiln.bake.ssh_port)")
    return sources


def _readmitting(method, state_dir: Path):
    """After a group's inbound rules change, its instances' SSH keys follow them."""
    from sandbox.machines import ssh_access

    def changed(self, *args, **kwargs):
        result = method(self, *args, **kwargs)
        group = kwargs.get("group_name_or_id") or (args[0] if args else None)
        for instance in self.all_instances():
            if not instance.key_name:
                continue  # no key, no line in the sandbox sshd to follow the rules
            groups = _instance_groups(self, instance)
            if group in {g.id for g in groups} | {g.name for g in groups}:
                ssh_access.readmit(state_dir, instance.id, ssh_sources(state_dir, self, instance))
        return result

    changed.__name__ = method.__name__
    return changed


def admits(target_group_arn: str, balancer_arns, instance_id: str, port: int) -> bool:
    """Whether the security groups let one of `balancer_arns` reach `instance_id` on `port`."""
    from moto.ec2.models import ec2_backends
    from moto.elbv2.models import elbv2_backends

    _, _, _, region, account, _ = target_group_arn.split(":", 5)
    ec2, elbv2 = ec2_backends[account][region], elbv2_backends[account][region]
    instance = ec2.get_instance_by_id(instance_id)
    if instance is None:
        return False
    for arn in balancer_arns:
        balancer = elbv2.load_balancers.get(arn)
        if balancer is not None and _reaches(ec2, balancer, instance, port):
            return True
    _note(f"load balancer {', '.join(balancer_arns) or '(none)'} cannot reach {instance_id} on "
          f"port {port}: no security group rule lets it out of the balancer's groups and into "
          f"the instance's ({', '.join(g.id for g in _instance_groups(ec2, instance))})")
    return False


def client_cidrs(where: tuple[str, str], balancer_arn: str, port: int) -> tuple[list[str], str]:
    """The CIDRs the balancer's security groups admit clients from on listener `port`, and the
    groups' ids (for the note a dropped client gets): what the load balancers' own process
    judges each connection by (sandbox.network.fronts)."""
    from moto.ec2.models import ec2_backends
    from moto.elbv2.models import elbv2_backends

    account, region = where
    balancer = elbv2_backends[account][region].load_balancers.get(balancer_arn)
    if balancer is None:
        return [], ""
    cidrs = [rule.ip_range["CidrIp"]
             for group in _groups(ec2_backends[account][region], balancer.security_groups,
                                  balancer.vpc_id)
             for rule in group.ingress_rules
             if _carries(rule, port) and rule.ip_range.get("CidrIp")]
    return cidrs, ", ".join(balancer.security_groups) or "the VPC default"


def client_groups(where: tuple[str, str], balancer_arn: str,
                  port: int) -> tuple[list[str], list[str]]:
    """The balancer's own groups (ids), and the groups whose members they admit on listener
    `port` (a rule naming a source group): a client in the balancer's VPC reaches it from one
    of those."""
    from moto.ec2.models import ec2_backends
    from moto.elbv2.models import elbv2_backends

    account, region = where
    balancer = elbv2_backends[account][region].load_balancers.get(balancer_arn)
    if balancer is None:
        return [], []
    groups = _groups(ec2_backends[account][region], balancer.security_groups, balancer.vpc_id)
    return [group.id for group in groups], sorted({
        rule.source_group["GroupId"] for group in groups for rule in group.ingress_rules
        if _carries(rule, port) and rule.source_group.get("GroupId")})


def egress_of(ec2, group_ids, vpc_id: str) -> tuple[list[str], list[dict]]:
    """The groups (ids; the VPC's default when none) and their outbound rules, as plain data:
    {"protocol", "from", "to", "cidr" or "group"} (sandbox.network.reach judges by them)."""
    groups = _groups(ec2, group_ids, vpc_id)
    rules = [{"protocol": rule.ip_protocol, "from": rule.from_port, "to": rule.to_port,
              "cidr": rule.ip_range.get("CidrIp"), "group": rule.source_group.get("GroupId")}
             for group in groups for rule in group.egress_rules]
    return [group.id for group in groups], rules


def _groups(ec2, ids_or_groups, vpc_id: str) -> list:
    """The groups (ids or groups, each once), or the VPC's default group when there are none."""
    found = {}
    for group in ids_or_groups:
        group = ec2.get_security_group_from_id(group) if isinstance(group, str) else group
        if group is not None:
            found[group.id] = group
    if not found:
        default = ec2.get_security_group_from_name("default", vpc_id=vpc_id)
        return [default] if default is not None else []
    return list(found.values())


def _instance_groups(ec2, instance) -> list:
    """The instance's groups: its own and its network interfaces' (RunInstances given
    NetworkInterfaces puts them there)."""
    return _groups(ec2, [*instance.security_groups,
                         *(g for nic in instance.nics.values() for g in nic.group_set)],
                   instance.vpc_id)


def _note(message: str) -> None:
    """Say once in the server's log (moto.log) what a security group dropped, and why: AWS
    says nothing, but a sandbox can point at the rule that is missing."""
    if message not in _noted:
        _noted.add(message)
        print(f"sandbox: {message}", file=sys.stderr, flush=True)


def _reaches(ec2, balancer, instance, port: int) -> bool:
    """The balancer's egress lets it out to the instance, and the instance's ingress lets it in
    (from the balancer's groups, or CIDRs covering every subnet of the balancer)."""
    balancer_groups = _groups(ec2, balancer.security_groups, balancer.vpc_id)
    instance_groups = _instance_groups(ec2, instance)
    subnets = [ipaddress.ip_network(subnet.cidr_block) for subnet in balancer.subnets]
    instance_ids = {group.id for group in instance_groups}
    address = ipaddress.ip_network(f"{instance.private_ip}/32")
    out = any(_allows(rule, port, instance_ids, address)
              for group in balancer_groups for rule in group.egress_rules)
    balancer_ids = {group.id for group in balancer_groups}
    inbound = [rule for group in instance_groups for rule in group.ingress_rules
               if _carries(rule, port)]
    if any(rule.source_group.get("GroupId") in balancer_ids for rule in inbound):
        return out
    cidrs = [ipaddress.ip_network(rule.ip_range["CidrIp"]) for rule in inbound
             if rule.ip_range.get("CidrIp")]
    covered = bool(subnets) and all(any(subnet.subnet_of(cidr) for cidr in cidrs)
                                    for subnet in subnets)
    return out and covered


def _carries(rule, port: int) -> bool:
    if rule.ip_protocol == "-1":
        return True
    return rule.ip_protocol == "tcp" and rule.from_port <= port <= rule.to_port


def _allows(rule, port: int, peer_ids: set, peer_address) -> bool:
    """An egress rule lets traffic out to a peer (its groups or its address) on `port`."""
    if not _carries(rule, port):
        return False
    if rule.source_group.get("GroupId"):
        return rule.source_group["GroupId"] in peer_ids
    cidr = rule.ip_range.get("CidrIp")
    return bool(cidr) and peer_address.subnet_of(ipaddress.ip_network(cidr))
