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
"""

from __future__ import annotations

import functools
import random
import time
from pathlib import Path

from sandbox import clock
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
    from moto.elbv2 import models

    network = NETWORK = Network()
    backend = models.ELBv2Backend

    original_create = backend.create_load_balancer

    def create_load_balancer(self, *args, **kwargs):
        balancer = original_create(self, *args, **kwargs)
        balancer.dns_name = loopback_address()
        return balancer

    backend.create_load_balancer = create_load_balancer
    for name in ("create_listener", "modify_listener", "delete_listener", "delete_load_balancer",
                 "create_rule", "modify_rule", "delete_rule", "set_rule_priorities"):
        setattr(backend, name, _reconciling(getattr(backend, name), network))

    original_register = backend.register_targets

    def register_targets(self, target_group_arn, instances):
        original_register(self, target_group_arn, instances)
        for target in instances:
            network.health.undrain(target_group_arn, target["Id"])

    original_deregister = backend.deregister_targets

    def deregister_targets(self, target_group_arn, instances):
        group = self.target_groups.get(target_group_arn)
        leaving = [(t["Id"], group.targets[t["Id"]]["Port"]) for t in instances
                   if group is not None and t["Id"] in group.targets]
        original_deregister(self, target_group_arn, instances)
        network.health.drain(group, leaving)

    backend.register_targets = register_targets
    backend.deregister_targets = deregister_targets
    backend.describe_target_health = _describing(backend.describe_target_health, network)

    original_reset = BackendDict.reset.__func__

    def reset(cls) -> None:
        original_reset(cls)
        network.stop_all()

    BackendDict.reset = classmethod(reset)
    targets.add_resolver(functools.partial(_machine, state_dir))
    network.start()


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


def _reconciling(method, network: Network):
    def wrapped(self, *args, **kwargs):
        result = method(self, *args, **kwargs)
        network.reconcile()
        return result

    wrapped.__name__ = method.__name__
    return wrapped


def _describing(original, network: Network):
    from moto.elbv2.models import FakeHealthStatus

    def describe_target_health(self, target_group_arn, targets):
        statuses = original(self, target_group_arn, targets)
        group = self.target_groups.get(target_group_arn)
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

    return describe_target_health


def _record(network: Network, group, status):
    """The health-check record of a target that has an address (a new one is `initial`)."""
    from sandbox.network import health, targets

    record = network.health.record(group.arn, status.instance_id)
    if record is None and group.health_check_enabled and targets.endpoint(
            group.target_type, status.instance_id, health.check_port(group, status.port)):
        record = health.Record()
    return record
