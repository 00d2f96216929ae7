"""Which AWS endpoints an instance reaches: only over a route its VPC gives it, as on AWS.

On AWS an instance reaches a service's public endpoint when it has a public address and its
subnet's route table sends 0.0.0.0/0 to an internet gateway, or when that table sends 0.0.0.0/0
to a NAT gateway; otherwise only through a VPC endpoint of that service: an interface endpoint
with private DNS (its name then resolves to the endpoint inside the VPC), or a gateway endpoint
(S3, DynamoDB) on the subnet's route table. Anything else times out.

    reach(backend, instance) -> {"internet": bool, "services": [signing names]}

The sandbox's EC2 computes `reach` at launch, and again for running instances when a route, a
route table association or a VPC endpoint is made or removed; the instance's way out
(sandbox.machines.forward) admits a request to the sandbox's endpoint only for a service it
lists (all when `internet`). As AWS makes them, a default VPC has an internet gateway its main
route table leads to, and a stack's SubnetRouteTableAssociation associates its table with the
subnet (moto's had no gateway, and only recorded the association).
"""

from __future__ import annotations

from pathlib import Path

from sandbox.aws import seams
from sandbox.machines import instances as machines

DEFAULT = "0.0.0.0/0"


def reach(backend, instance) -> dict:
    """What `instance` reaches of AWS, from its address and its subnet's routes and endpoints."""
    subnet = getattr(instance, "subnet_id", None)
    table = _route_table(backend, subnet) if subnet else None
    if table is None:  # no VPC to route it (EC2-Classic): its public address is its way out
        return {"internet": bool(instance.public_ip), "services": []}
    default = [r for r in table.routes if r.destination_cidr_block == DEFAULT]
    to_gateway = any(str(getattr(r.gateway, "id", "")).startswith("igw-") for r in default)
    to_nat = any(r.nat_gateway is not None for r in default)
    internet = to_nat or (to_gateway and bool(instance.public_ip))
    return {"internet": internet, "services": sorted(_endpoints(backend, table))}


def _route_table(backend, subnet_id: str):
    """The subnet's route table: the one associated with it, else its VPC's main table."""
    vpc_id = backend.get_subnet(subnet_id).vpc_id
    tables = [t for t in backend.route_tables.values() if t.vpc_id == vpc_id]
    for table in tables:
        if subnet_id in table._associations.values():
            return table
    return next((t for t in tables if t.main_association_id is not None), None)


def _endpoints(backend, table) -> set[str]:
    """The services the table's VPC has endpoints of that this subnet uses."""
    found = set()
    for endpoint in backend.vpc_end_points.values():
        if endpoint.vpc_id != table.vpc_id or endpoint.state != "available":
            continue
        service = endpoint.service_name.rsplit(".", 1)[-1]
        kind = (endpoint.vpc_endpoint_type or "Gateway").lower()
        private_dns = str(endpoint.private_dns_enabled).lower() == "true"
        on_table = table.id in (endpoint.route_table_ids or [])
        if (kind == "interface" and private_dns) or (kind == "gateway" and on_table):
            found.add(service)
    return found


# -- kept current: a route or endpoint made or removed changes what running instances reach ---
_CHANGES = {
    "moto.ec2.models.vpcs.VPCBackend": {
        "create_vpc_endpoint": "(self, vpc_id: str, service_name: str, endpoint_type: str | "
        "None, policy_document: str | None, route_table_ids: list[str], subnet_ids: list[str] "
        "| None = None, network_interface_ids: list[str] | None = None, dns_entries: dict[str, "
        "str] | None = None, client_token: str | None = None, security_group_ids: list[str] | "
        "None = None, tags: dict[str, str] | None = None, private_dns_enabled: bool | None = "
        "None) -> moto.ec2.models.vpcs.VPCEndPoint",
        "delete_vpc_endpoints": "(self, vpce_ids: list[str] | None = None) -> None",
    },
    "moto.ec2.models.route_tables.RouteBackend": {
        "create_route": "(self, route_table_id: str, destination_cidr_block: str | None, "
        "destination_ipv6_cidr_block: str | None = None, destination_prefix_list_id: str | None"
        " = None, local: bool = False, gateway_id: str | None = None, instance_id: str | None ="
        " None, nat_gateway_id: str | None = None, egress_only_igw_id: str | None = None, "
        "transit_gateway_id: str | None = None, interface_id: str | None = None, "
        "vpc_peering_connection_id: str | None = None, carrier_gateway_id: str | None = None, "
        "vpc_endpoint_id: str | None = None) -> moto.ec2.models.route_tables.Route",
        "delete_route": "(self, route_table_id: str, destination_cidr_block: str, "
        "destination_ipv6_cidr_block: str | None = None, destination_prefix_list_id: str | "
        "None = None) -> moto.ec2.models.route_tables.Route",
        "associate_route_table": "(self, route_table_id: str, gateway_id: str | None = None, "
        "subnet_id: str | None = None) -> str",
        "disassociate_route_table": "(self, association_id: str) -> str | None",
    },
}


def apply(state_dir: Path) -> None:
    import importlib

    from moto.ec2.models.subnets import SubnetBackend, SubnetRouteTableAssociation
    from moto.ec2.models.vpcs import VPCBackend

    seams.wrap(VPCBackend, "create_default_vpc", _with_internet_gateway,
               signature="(self) -> moto.ec2.models.vpcs.VPC", owner=__name__)
    seams.wrap(SubnetBackend, "create_subnet_association", _associating,
               signature="(self, route_table_id: 'str', subnet_id: 'str') -> "
                         "'SubnetRouteTableAssociation'", owner=__name__)
    seams.add(SubnetRouteTableAssociation, "delete", _disassociate, owner=__name__)

    for dotted, methods in _CHANGES.items():
        module, _, name = dotted.rpartition(".")
        owner = getattr(importlib.import_module(module), name)
        for method, signature in methods.items():
            seams.wrap(owner, method, lambda moto: _then_refresh(moto, state_dir),
                       signature=signature, owner=__name__)


def _with_internet_gateway(create_default_vpc):
    """A default VPC comes with an internet gateway its main route table sends 0.0.0.0/0 to,
    as AWS makes it (moto's has none)."""
    def wrapper(backend, *args, **kwargs):
        vpc = create_default_vpc(backend, *args, **kwargs)
        gateway = backend.create_internet_gateway()
        backend.attach_internet_gateway(gateway.id, vpc.id)
        main = next(t for t in backend.route_tables.values()
                    if t.vpc_id == vpc.id and t.main_association_id is not None)
        backend.create_route(main.id, DEFAULT, gateway_id=gateway.id)
        return vpc

    return wrapper


def _associating(create_subnet_association):
    """CloudFormation's SubnetRouteTableAssociation associates the table with the subnet, as
    AssociateRouteTable does (moto only recorded it, and the subnet kept its VPC's main table)."""
    def wrapper(backend, route_table_id, subnet_id):
        made = create_subnet_association(backend, route_table_id, subnet_id)
        made.association_id = backend.associate_route_table(route_table_id,
                                                            subnet_id=subnet_id)
        return made

    return wrapper


def _disassociate(association, account_id: str, region_name: str) -> None:
    """The stack's association goes with it (before its route table, which it holds)."""
    from moto.ec2.models import ec2_backends

    if getattr(association, "association_id", None):
        backend = ec2_backends[account_id][region_name]
        backend.disassociate_route_table(association.association_id)
        backend.subnet_associations.pop(
            f"{association.route_table_id}:{association.subnet_id}", None)


def _then_refresh(change, state_dir: Path):
    def wrapper(backend, *args, **kwargs):
        result = change(backend, *args, **kwargs)
        refresh(state_dir, backend)
        return result

    return wrapper


def refresh(state_dir: Path, backend) -> None:
    """Rewrite what each of the backend's running machines reaches."""
    for reservation in backend.reservations.values():
        for instance in reservation.instances:
            if instance.state == "running" and machines.instance_dir(
                    state_dir, instance.id).is_dir():
                machines.write_routes(state_dir, instance.id, reach(backend, instance))
