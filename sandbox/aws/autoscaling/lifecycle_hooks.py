"""Launch lifecycle hooks hold a group's new instances in Pending:Wait, as on AWS.

AWS behaviour mirrored here (moto stores the hooks of PutLifecycleHook but never applies them;
https://docs.aws.amazon.com/autoscaling/ec2/userguide/lifecycle-hooks.html):
- An instance a group launches (or attaches) while the group has an
  `autoscaling:EC2_INSTANCE_LAUNCHING` hook is `Pending:Wait` until every such hook is
  completed: CompleteLifecycleAction with CONTINUE (by InstanceId or LifecycleActionToken) for
  all of them puts it InService; ABANDON for any of them terminates it, records the launch as a
  Cancelled scaling activity ("Instance failed to complete user's Lifecycle Action: …") and the
  group launches a replacement to keep its desired capacity.
- A hook not completed within its HeartbeatTimeout (AWS seconds, times the sandbox's time scale,
  sandbox/clock.py) takes its DefaultResult, as does one past its global timeout (100 heartbeat
  timeouts or 48 hours, whichever is less); RecordLifecycleActionHeartbeat restarts the
  heartbeat timeout.
- Completing or heartbeating an action that is not waiting is a ValidationError, "No active
  Lifecycle Action found with instance ID …" (or "… with token …").
- A load-balanced group registers an instance with its target groups only once its launch
  hooks are completed (Pending:Proceed, before InService), not while it waits: moto registered
  every instance of the group at launch.
DescribeAutoScalingInstances and DescribeAutoScalingGroups show the states.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sandbox import clock
from sandbox.aws import seams

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
GLOBAL_TIMEOUT = 172800  # AWS seconds
TICK = 0.2  # real seconds between two looks for expired heartbeats
_lock = threading.RLock()
_stop = threading.Event()


def apply(state_dir: Path) -> None:
    from moto.autoscaling.models import AutoScalingBackend, InstanceState
    from moto.autoscaling.responses import AutoScalingResponse

    seams.wrap(InstanceState, "__init__", _held,
               signature="(self, instance: 'Instance', lifecycle_state: 'str' = 'InService', "
                         "health_status: 'str' = 'Healthy', protected_from_scale_in: "
                         "'bool | None' = False, autoscaling_group: "
                         "'FakeAutoScalingGroup | None' = None)", owner=__name__)
    seams.replace(AutoScalingBackend, "update_attached_target_groups", _register_ready,
                  signature="(self, group_name: 'str') -> 'None'", owner=__name__)
    seams.add(AutoScalingResponse, "complete_lifecycle_action", _complete, owner=__name__)
    seams.add(AutoScalingResponse, "record_lifecycle_action_heartbeat", _heartbeat,
              owner=__name__)
    threading.Thread(target=_loop, daemon=True, name="sandbox-lifecycle-hooks").start()


class Wait:
    """One launching hook's wait on one instance."""

    def __init__(self, hook):
        self.hook = hook.name
        self.timeout = int(hook.heartbeat_timeout)
        self.default = hook.default_result
        self.token = str(uuid.uuid4())
        self.heartbeat = clock.after(self.timeout)
        self.limit = clock.after(min(100 * self.timeout, GLOBAL_TIMEOUT))

    def expired(self) -> bool:
        return clock.passed(self.heartbeat) or clock.passed(self.limit)


def _held(moto_init):
    def init(self, instance, *args, **kwargs):
        moto_init(self, instance, *args, **kwargs)
        group = self.auto_scaling_group
        hooks = [h for h in group.autoscaling_backend.lifecycle_hooks.values()
                 if h.auto_scaling_group_name == group.name
                 and h.lifecycle_transition == LAUNCHING]
        if hooks and self.lifecycle_state != "Standby":
            self.__dict__["_sandbox_waits"] = {h.name: Wait(h) for h in hooks}
            self.lifecycle_state = "Pending:Wait"

    return init


def _register_ready(self, group_name: str) -> None:
    """Register the group's instances with its target groups, as moto does, except those
    still waiting for a launch hook (they are registered when it completes)."""
    group = self.autoscaling_groups[group_name]
    if not group.target_group_arns:
        return
    ready = [s.instance.id for s in list(group.instance_states) if not _waits(s)]
    for target_group in self.elbv2_backend.describe_target_groups(
            target_group_arns=group.target_group_arns, load_balancer_arn=None, names=None):
        self.elbv2_backend.register_targets(
            target_group.arn, [{"Id": i, "Port": target_group.port} for i in ready])


def _waits(state) -> dict:
    return state.__dict__.get("_sandbox_waits") or {}


def _find(backend, group_name: str, hook_name: str, instance_id: str | None,
          token: str | None):
    """The waiting instance state and its wait for this hook, or a ValidationError."""
    from moto.autoscaling.exceptions import ValidationError

    group = backend.autoscaling_groups.get(group_name)
    if group is None:
        raise ValidationError(f"AutoScalingGroup name not found - {group_name}")
    if f"{group_name}_{hook_name}" not in backend.lifecycle_hooks:
        raise ValidationError(f"No Lifecycle Hook found with name {hook_name} for group "
                              f"{group_name}")
    for state in group.instance_states:
        wait = _waits(state).get(hook_name)
        if wait and (state.instance.id == instance_id or wait.token == token):
            return state, wait
    if instance_id:
        raise ValidationError(f"No active Lifecycle Action found with instance ID "
                              f"{instance_id}")
    raise ValidationError(f"No active Lifecycle Action found with token {token}")


def _request(response):
    return (response.autoscaling_backend, response._get_param("AutoScalingGroupName"),
            response._get_param("LifecycleHookName"), response._get_param("InstanceId"),
            response._get_param("LifecycleActionToken"))


def _complete(self):
    from moto.autoscaling.exceptions import ValidationError
    from moto.core.responses import EmptyResult

    result = self._get_param("LifecycleActionResult")
    if result not in ("CONTINUE", "ABANDON"):
        raise ValidationError(f"Invalid value {result!r} for LifecycleActionResult: it must be "
                              f"CONTINUE or ABANDON")
    backend, group, hook, instance_id, token = _request(self)
    with _lock:
        state, wait = _find(backend, group, hook, instance_id, token)
        _settle(backend, state, wait, result, "Lifecycle Action Completed with "
                f"{result} Result")
    return EmptyResult()


def _heartbeat(self):
    from moto.core.responses import EmptyResult

    backend, group, hook, instance_id, token = _request(self)
    with _lock:
        _state, wait = _find(backend, group, hook, instance_id, token)
        wait.heartbeat = clock.after(wait.timeout)
    return EmptyResult()


def _settle(backend, state, wait, result: str, why: str) -> None:
    """One hook's answer for one instance: the last CONTINUE puts it InService, an ABANDON
    terminates it (and the group replaces it)."""
    waits = _waits(state)
    waits.pop(wait.hook, None)
    if result == "ABANDON":
        waits.clear()
        _record_cancelled(state, wait, why)
        state.health_status = "Unhealthy"
        backend.terminate_instance(state.instance.id, should_decrement=False)
    elif not waits:
        state.lifecycle_state = "InService"
        backend.update_attached_target_groups(state.auto_scaling_group.name)


def _record_cancelled(state, wait, why: str) -> None:
    group = state.auto_scaling_group
    now = datetime.now(UTC)
    reason = (f"Instance failed to complete user's Lifecycle Action: Lifecycle Action with "
              f"token {wait.token} was abandoned: {why}")
    group.__dict__.setdefault("_sandbox_activities", []).insert(0, {
        "ActivityId": str(uuid.uuid4()), "AutoScalingGroupName": group.name,
        "Description": f"Launching a new EC2 instance: {state.instance.id}. Status Reason: "
                       f"{reason}",
        "Cause": f"At {now:%Y-%m-%dT%H:%M:%SZ} an instance was started in response to a "
                 f"difference between desired and actual capacity",
        "StartTime": now, "EndTime": now, "StatusCode": "Cancelled", "StatusMessage": reason,
        "Progress": 100, "Details": f'{{"InstanceId": "{state.instance.id}"}}',
    })


def expire() -> int:
    """Apply the default result of every wait past its timeout; how many were applied."""
    from moto.autoscaling.models import autoscaling_backends

    applied = 0
    for regions in list(autoscaling_backends.values()):
        for backend in list(regions.values()):
            for group in list(backend.autoscaling_groups.values()):
                for state in list(group.instance_states):
                    with _lock:
                        for wait in list(_waits(state).values()):
                            if wait.expired() and wait.hook in _waits(state):
                                _settle(backend, state, wait, wait.default, "Heartbeat Timeout")
                                applied += 1
    return applied


def _loop() -> None:
    while not _stop.wait(TICK):
        try:
            expire()
        except Exception:  # noqa: BLE001 - one bad round must not end the timeouts
            traceback.print_exc(file=sys.stderr)
            time.sleep(1)
