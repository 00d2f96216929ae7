"""DescribeTargetHealth as an Application Load Balancer reports it (moto says `healthy` always).

AWS behaviour mirrored here:
- A load balancer health-checks only target groups that a listener or rule forwards to; targets
  of any other group are `unused` (Target.NotInUse).
- An instance that is pending is `initial`, a stopped one `unused` (Target.InvalidState), one
  shutting down `draining`; Auto Scaling deregisters the instances it terminates, so a terminated
  instance leaves the group (asked for by id, it shows as `draining`).
- An instance that fails its health check is `unhealthy` (Target.FailedHealthChecks). The sandbox
  has no application to probe, so an instance marked Unhealthy with Auto Scaling's
  SetInstanceHealth stands for one that fails the load balancer's check (with HealthCheckType ELB
  the two go together on AWS).

This module owns DescribeTargetHealth; its other steps are the registration wait
(sandbox.aws.timing) and the real health checks of the load balancers
(sandbox.aws.elbv2.load_balancers).
"""

import threading
from pathlib import Path

from sandbox.aws import seams, timing
from sandbox.aws.elbv2 import load_balancers

_dropping = threading.Lock()


def apply(state_dir: Path) -> None:
    from moto.elbv2.models import ELBv2Backend

    seams.wrap(ELBv2Backend, "describe_target_health", _describe_target_health,
               signature="(self, target_group_arn: str, targets: list[dict[str, typing.Any]]) -> "
                         "list[moto.elbv2.models.FakeHealthStatus]", owner=__name__)


def _describe_target_health(moto):
    def describe_target_health(self, target_group_arn, targets):
        # 1. What moto's models tell: terminated instances leave, the rest as AWS would show
        #    them; 2. a new registration is `initial` for its health checks' time (timing);
        #    3. the real health checks of targets with an address, and draining targets
        #    (load_balancers).
        group = self.target_groups.get(target_group_arn)
        if group is not None:
            _drop_terminated(self, group)
        statuses = moto(self, target_group_arn, targets)
        in_use = _in_use(self, target_group_arn)
        statuses = [_as_aws(self, group, status, in_use) for status in statuses]
        statuses = timing.initial_until_checked(self, target_group_arn, statuses)
        return load_balancers.reported_health(self, target_group_arn, targets, statuses)

    return describe_target_health


def _drop_terminated(backend, group) -> None:
    # Requests run on threads, and moto's models have no locks of their own.
    with _dropping:
        gone = [target_id for target_id in list(group.targets)
                if (_instance_state(backend, target_id) or "") == "terminated"]
        if gone:
            group.deregister_terminated_instances(gone)


def _in_use(backend, target_group_arn: str) -> bool:
    for balancer in backend.load_balancers.values():
        for listener in balancer.listeners.values():
            actions = list(listener.default_actions)
            for rule in listener.rules.values():
                actions.extend(rule.actions)
            for action in actions:
                if action.type == "forward" and target_group_arn in (
                        backend._get_target_group_arns_from(action_data=action.data)):
                    return True
    return False


def _as_aws(backend, group, status, in_use: bool):
    from moto.elbv2.models import FakeHealthStatus

    if status.status != "healthy":
        return status
    target_id = status.instance_id

    def health(state: str, reason: str, description: str) -> FakeHealthStatus:
        return FakeHealthStatus(target_id, status.port, status.health_check_port, state, reason,
                                description)

    if not in_use:
        return health("unused", "Target.NotInUse", "Target group is not configured to receive "
                      "traffic from the load balancer")
    instance_state = _instance_state(backend, target_id)
    if instance_state == "pending":
        return health("initial", "Elb.RegistrationInProgress",
                      "Target registration is in progress")
    if instance_state in ("shutting-down", "terminated"):
        return health("draining", "Target.DeregistrationInProgress",
                      "Target deregistration is in progress")
    if _autoscaling_health(backend, target_id) == "Unhealthy":
        return health("unhealthy", "Target.FailedHealthChecks", "Health checks failed")
    return status


def _instance_state(backend, target_id: str) -> str | None:
    if not target_id.startswith("i-"):
        return None
    instance = backend.ec2_backend.get_instance_by_id(target_id)
    return instance.state if instance else None


def _autoscaling_health(backend, instance_id: str) -> str | None:
    from moto.autoscaling.models import autoscaling_backends

    groups = autoscaling_backends[backend.account_id][backend.region_name].autoscaling_groups
    for group in groups.values():
        for state in group.instance_states:
            if state.instance.id == instance_id:
                return state.health_status
    return None
