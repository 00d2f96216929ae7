"""StopInstances and StartInstances on a terminated instance, which moto 5 accepts.

As on AWS: a terminated (or shutting-down) instance cannot be stopped or started again; the call
fails with IncorrectInstanceState and the instance stays terminated. Without this, a StopInstances
request that arrives after the instance was terminated brings it back as `stopped` in the sandbox.
(https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html)
"""

from __future__ import annotations

from pathlib import Path

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.instances import Instance

from sandbox.aws import seams

GONE = ("terminated", "shutting-down")


class IncorrectInstanceState(EC2ClientError):
    def __init__(self, instance_id: str, state: str):
        super().__init__("IncorrectInstanceState",
                         f"The instance '{instance_id}' is not in a state from which it can be "
                         f"stopped or started (current state: {state}).")


def _refuse_when_gone(original):
    def guarded(self: Instance, *args, **kwargs):
        if self._state.name in GONE:
            raise IncorrectInstanceState(self.id, self._state.name)
        return original(self, *args, **kwargs)

    return guarded


def apply(state_dir: Path) -> None:
    for name in ("stop", "start"):
        seams.wrap(Instance, name, _refuse_when_gone, signature="(self) -> 'InstanceState'",
                   owner=__name__)
