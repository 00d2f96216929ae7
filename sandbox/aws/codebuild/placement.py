"""Where a build's machine is on the network, as CodeBuild places a build on AWS.

Without a VpcConfig a build runs in CodeBuild's own network, with the internet: it has no
private address anyone else sees, and its requests to the internet come from an address of
AWS's. With a VpcConfig CodeBuild gives it a network interface in the first of the project's
subnets (the service role must let CodeBuild create one: ec2:CreateNetworkInterface), with a
private address of that subnet and no public one: it reaches the internet only when the
subnet's route table sends 0.0.0.0/0 to a NAT gateway, its requests then coming from the NAT's
address; an internet gateway alone gives it none (AWS documents that a build in a public subnet
has no internet access). Its security groups (the project's, else the VPC's default) let out
what their outbound rules allow, and are what a balancer's rule naming a source group admits.

    place(backend, project, role, session) -> {"vpc", "private", "public", "groups", "egress"}
    located(backend, project, place) -> the place again, after its routes or groups changed
(sandbox.network.reach reads them.)
"""

from __future__ import annotations

import ipaddress
import random
import uuid

from sandbox.aws.codepipeline import service_role
from sandbox.aws.codepipeline.service_role import Refused


def place(backend, project: dict, role: str, session: str) -> dict:
    config = project.get("vpcConfig") or {}
    if not config.get("vpcId"):
        return {"vpc": None, "private": private_address(), "public": _public_address()}
    from moto.ec2.models import ec2_backends

    region = backend.region_name
    service_role.check(role, session, "ec2:CreateNetworkInterface", "*", region)
    ec2 = ec2_backends[backend.account_id][region]
    subnets = config.get("subnets") or []
    subnet = _subnet(ec2, subnets[0]) if subnets else None
    if subnet is None or subnet.vpc_id != config["vpcId"]:
        raise Refused(f"Build's VPC configuration is invalid: subnet "
                      f"{subnets[0] if subnets else '(none)'} is not in VPC {config['vpcId']}")
    return located(backend, project, {"private": _in(subnet.cidr_block)})


def located(backend, project: dict, place: dict) -> dict:
    """A VPC build's place as its subnet's routes and its groups are now (its address kept)."""
    from moto.ec2.models import ec2_backends

    from sandbox.aws.ec2 import security_groups

    config = project["vpcConfig"]
    ec2 = ec2_backends[backend.account_id][backend.region_name]
    subnet = _subnet(ec2, config["subnets"][0])
    if subnet is None:  # gone while the build runs: its interface with it
        return {**place, "public": None, "groups": [], "egress": []}
    groups, egress = security_groups.egress_of(ec2, config.get("securityGroupIds") or [],
                                               subnet.vpc_id)
    return {"vpc": subnet.vpc_id, "private": place["private"],
            "public": _nat_address(ec2, subnet.id), "groups": groups, "egress": egress}


def _subnet(ec2, subnet_id: str):
    from moto.ec2.exceptions import InvalidSubnetIdError

    try:
        return ec2.get_subnet(subnet_id)
    except InvalidSubnetIdError:
        return None


def _nat_address(ec2, subnet_id: str) -> str | None:
    """The public address of the NAT gateway the subnet's default route leads to, if any."""
    from sandbox.aws.ec2 import routes

    table = routes._route_table(ec2, subnet_id)
    for route in table.routes if table is not None else ():
        if route.destination_cidr_block == routes.DEFAULT and route.nat_gateway is not None:
            eni = getattr(route.nat_gateway, "_eni", None)
            return getattr(eni, "public_ip", None)
    return None


def private_address() -> str:
    """A private address in 10.0.0.0/8, the build's own (it is alone in its network)."""
    number = uuid.uuid4().int
    return f"10.{number % 200 + 20}.{number // 200 % 250}.{number // 50000 % 250 + 1}"


def _in(cidr: str) -> str:
    network = ipaddress.ip_network(cidr)
    # AWS keeps a subnet's first four addresses and its last.
    return str(network[random.randint(4, max(network.num_addresses - 2, 4))])


def _public_address() -> str:
    """An address of AWS's that the build's requests to the internet leave from."""
    from moto.ec2.utils import random_public_ip

    return random_public_ip()
