"""Auto Scaling groups keep their instances running, as Auto Scaling's EC2 health check does.

AWS behaviour mirrored here (moto launches a group's instances but never looks at them again):
- An instance that is no longer running (stopped with StopInstances, or its machine halted or
  crashed: on EC2, any state but `running`) is unhealthy, whatever the health check grace
  period: Auto Scaling marks it Unhealthy, terminates it (a terminated instance leaves the
  group's target groups, see `elb_health`; a load balancer never sends a request to a machine
  that is not running) and launches a new instance from the launch template to keep the
  desired capacity.
- Instances still Pending count toward the desired capacity (moto counted only InService ones,
  so a change of capacity while instances were Pending, see `timing`, launched too many).
The group's instances are sandbox machines when its image holds one (sandbox.aws.ec2.run_instances
launches them); those can also stop by themselves. The check runs every 10 s of AWS's time.
"""

from __future__ import annotations

import sys
import threading
import traceback
from pathlib import Path

from sandbox import clock
from sandbox.aws import seams
from sandbox.machines import instances as machines

CHECK_SECONDS = 10  # AWS time between two health checks of a group's instances
TICK = 0.2  # real seconds between two looks at the clock
_stop = threading.Event()


COUNTED = ("Pending", "Pending:Wait", "Pending:Proceed", "InService")


def apply(state_dir: Path) -> None:
    from moto.autoscaling.models import FakeAutoScalingGroup

    seams.replace(FakeAutoScalingGroup, "active_instances", _counted,
                  signature="(self) -> 'list[InstanceState]'", owner=__name__)
    threading.Thread(target=_loop, args=(state_dir,), daemon=True,
                     name="sandbox-server-groups").start()


def _counted(group) -> list:
    """The instances that make up the group's capacity: launching or in service."""
    return [state for state in group.instance_states if state.lifecycle_state in COUNTED]


def _loop(state_dir: Path) -> None:
    # The wait is measured each tick, not once per round: a slow time scale set and then set
    # back must not leave the groups unchecked for the slow round's whole wait.
    last = clock.now()
    while not _stop.wait(TICK):
        if clock.now() - last < clock.real(CHECK_SECONDS):
            continue
        last = clock.now()
        try:
            replace_stopped(state_dir)
        except Exception:  # noqa: BLE001 - one bad round must not end the checks
            traceback.print_exc(file=sys.stderr)


def _not_running(state_dir: Path, instance) -> bool:
    """Stopped (StopInstances, or its machine halted), or on its way there."""
    if instance.state in ("stopping", "stopped"):
        return True
    return instance.state == "running" and machines.stopped(state_dir, instance.id)


def replace_stopped(state_dir: Path) -> list[str]:
    """Replace every group instance that is not running; the replaced instance ids."""
    from moto.autoscaling.models import autoscaling_backends

    replaced = []
    for regions in list(autoscaling_backends.values()):
        for backend in list(regions.values()):
            for group in list(backend.autoscaling_groups.values()):
                for state in list(group.instance_states):
                    instance = state.instance
                    if _not_running(state_dir, instance):
                        state.health_status = "Unhealthy"
                        backend.terminate_instance(instance.id, should_decrement=False)
                        replaced.append(instance.id)
    return replaced
