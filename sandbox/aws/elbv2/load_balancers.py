"""Load balancers that carry real traffic (see `sandbox.network`), wired into moto's ELBv2.

AWS behaviour mirrored here:
- Each load balancer has its own address, on loopback in the sandbox (its DNSName: there is no
  DNS, so the name is the address); each listener is a reverse proxy on that address and the
  listener's port, started by CreateListener and stopped by DeleteListener, DeleteLoadBalancer
  and a reset.
- DescribeTargetHealth reports the real health checks of every target that has an address
  (`initial`, `healthy`, `unhealthy` with Target.ResponseCodeMismatch / Target.Timeout /
  Target.FailedHealthChecks), on top of what `elb_health` reports for the rest.
- Instance targets that are sandbox machines are reached inside their network namespace (an
  app listening on the instance's port); instances with no machine keep `elb_health`'s answers.
- DeregisterTargets drains: the target shows `draining` (Target.DeregistrationInProgress) for
  the group's deregistration delay, gets no new requests, and finishes those in flight.
CreateListener and ModifyListener (sandbox.aws.elbv2.listeners) and DescribeTargetHealth
(sandbox.aws.elbv2.target_health) take their steps here through `reconcile` and
`reported_health`.
"""

from __future__ import annotations

import functools
import random
import time
from pathlib import Path

from sandbox import clock
from sandbox.aws import seams
from sandbox.network import targets
from sandbox.network.supervisor import Network

CONNECT_TIMEOUT = 10  # seconds: an ALB gives up connecting to a target after 10 s (504)

NETWORK: Network | None = None


def loopback_address() -> str:
    """A loopback address of its own for a load balancer (127.128.0.0/9: clear of 127.0.x.x)."""
    return f"127.{random.randint(128, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def apply(state_dir: Path) -> None:
    global NETWORK
    from moto.core.base_backend import BackendDict
    from moto.elbv2.models import ELBv2Backend

    network = NETWORK = Network(state_dir)
    seams.wrap(ELBv2Backend, "create_load_balancer", _own_address, signature=CREATE_BALANCER,
               owner=__name__)
    for name, signature in RECONCILING.items():
        seams.wrap(ELBv2Backend, name, _reconciling, signature=signature, owner=__name__)
    seams.wrap(ELBv2Backend, "register_targets", _undraining,
               signature="(self, target_group_arn: str, instances: list[typing.Any]) -> None",
               owner=__name__)
    seams.wrap(ELBv2Backend, "deregister_targets", _draining,
               signature="(self, target_group_arn: str, instances: list[dict[str, typing.Any]]) "
                         "-> None", owner=__name__)
    seams.wrap(BackendDict, "reset", _stopping, signature="(cls) -> None", owner=__name__)
    targets.add_resolver(functools.partial(_machine, state_dir))
    network.start()


CREATE_BALANCER = (
    "(self, name: str, security_groups: list[str], subnet_ids: list[str], subnet_mappings: "
    "list[dict[str, str]] | None = None, scheme: str = 'internet-facing', loadbalancer_type: "
    "str | None = None, ip_address_type: str = 'ipv4', tags: list[dict[str, str]] | None = "
    "None) -> moto.elbv2.models.FakeLoadBalancer")
LISTENER = "moto.elbv2.models.FakeListener"
RULE = "moto.elbv2.models.FakeRule"
# moto's calls after which the proxies follow the listeners and rules (CreateListener and
# ModifyListener: see reconcile).
RECONCILING = {
    "delete_listener": f"(self, listener_arn: str) -> {LISTENER}",
    "delete_load_balancer": "(self, arn: str) -> None",
    "create_rule": "(self, listener_arn: str, conditions: list[dict[str, typing.Any]], priority: "
                   "int, actions: list[dict[str, typing.Any]], tags: list[dict[str, str]] | "
                   "None = None) -> moto.elbv2.models.FakeListenerRule",
    "modify_rule": "(self, rule_arn: str, conditions: list[dict[str, typing.Any]], actions: "
                   f"list[dict[str, typing.Any]]) -> {RULE}",
    "delete_rule": "(self, arn: str) -> None",
    "set_rule_priorities": "(self, rule_priorities: list[dict[str, typing.Any]]) -> "
                           f"list[{RULE}]",
}


def reconcile() -> None:
    """The proxies follow the balancers' listeners and rules (after a change to them)."""
    NETWORK.reconcile()


def follow() -> None:
    """After any call that may change state: the proxies have what they judge by before it
    returns (a security group rule, an attribute, a target registered)."""
    if NETWORK is not None:
        NETWORK.follow()


def _own_address(moto):
    def create_load_balancer(self, *args, **kwargs):
        balancer = moto(self, *args, **kwargs)
        balancer.dns_name = loopback_address()
        return balancer

    return create_load_balancer


def _undraining(moto):
    def register_targets(self, target_group_arn, instances):
        moto(self, target_group_arn, instances)
        for target in instances:
            NETWORK.health.undrain(target_group_arn, target["Id"])

    return register_targets


def _draining(moto):
    def deregister_targets(self, target_group_arn, instances):
        group = self.target_groups.get(target_group_arn)
        leaving = [(t["Id"], group.targets[t["Id"]]["Port"]) for t in instances
                   if group is not None and t["Id"] in group.targets]
        moto(self, target_group_arn, instances)
        NETWORK.health.drain(group, leaving)

    return deregister_targets


def _stopping(moto):
    def reset(cls) -> None:
        moto.__func__(cls)
        NETWORK.stop_all()

    return classmethod(reset)


def _machine(state_dir: Path, target_type: str, target_id: str, port: int, origin: tuple):
    """An instance that is a sandbox machine: its app is reached inside its network namespace
    (a machine still booting, or stopped, refuses the connection, as its address would), when
    the security groups let the load balancers of `origin` reach it there."""
    from sandbox.aws.ec2 import security_groups
    from sandbox.machines import instances as machines
    from sandbox.machines import ssh_access

    if target_type != "instance" or not target_id.startswith("i-") or not ssh_access.is_machine(
            state_dir, target_id):
        return None
    try:
        host = machines.address(state_dir, target_id)
    except KeyError:  # not yet booted far enough to have its address
        host = target_id

    def opener(timeout: float):
        if not (origin and security_groups.admits(*origin, target_id, port)):
            # Dropped, not refused: the connection attempt waits out its timeout (an ALB's is
            # 10 s), as with a security group on AWS.
            time.sleep(min(timeout, clock.real(CONNECT_TIMEOUT)))
            raise TimeoutError(f"{target_id}:{port}: dropped by its security groups")
        return machines.connect(state_dir, target_id, port, timeout=timeout)

    return targets.Endpoint(host, port, opener=opener)


def _reconciling(moto):
    def wrapped(self, *args, **kwargs):
        result = moto(self, *args, **kwargs)
        reconcile()
        return result

    wrapped.__name__ = moto.__name__
    return wrapped


def reported_health(backend, target_group_arn: str, targets, statuses: list) -> list:
    """A step of DescribeTargetHealth (sandbox.aws.elbv2.target_health's): the real health
    checks of the targets that have an address, and the targets draining."""
    from moto.elbv2.models import FakeHealthStatus

    network = NETWORK
    group = backend.target_groups.get(target_group_arn)
    if group is None:
        return statuses
    draining = network.health.draining(target_group_arn)
    asked = {t["Id"] for t in targets or []}
    reported = []
    for status in statuses:
        if status.instance_id in draining:
            continue
        record = _record(network, group, status)
        if record and status.status not in ("unused", "draining"):
            status = FakeHealthStatus(status.instance_id, status.port,
                                      status.health_check_port, record.state,
                                      record.reason, record.description)
        reported.append(status)
    for target_id, port in draining.items():
        if not asked or target_id in asked:
            reported.append(FakeHealthStatus(
                target_id, port, group.health_check_port, "draining",
                "Target.DeregistrationInProgress", "Target deregistration is in progress"))
    return reported


def _record(network: Network, group, status):
    """The health-check record of a target that has an address (a new one is `initial`)."""
    from sandbox.network import health, targets

    record = network.health.record(group.arn, status.instance_id)
    if record is None and group.health_check_enabled and targets.endpoint(
            group.target_type, status.instance_id, health.check_port(group, status.port)):
        record = health.Record()
    return record
