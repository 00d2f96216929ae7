"""A sandbox reset (moto's /moto-api/reset) forgets what moto's state stood for, too.

moto's reset clears its models (and, through sandbox.aws.elbv2.load_balancers, stops the load
balancers' listeners); then the sandbox forgets the instances' machines and SSH keys
(sandbox.aws.ec2.run_instances), then the images' layers (sandbox.aws.ec2.machine_images).
"""

from __future__ import annotations

from pathlib import Path

from sandbox.aws import seams
from sandbox.aws.ec2 import instance_metadata, machine_images
from sandbox.machines import ssh_access


def apply(state_dir: Path) -> None:
    from moto.moto_api._internal.models import MotoAPIBackend

    seams.wrap(MotoAPIBackend, "reset", lambda moto: _reset(moto, state_dir),
               signature="(self) -> None", owner=__name__)


def _reset(moto, state_dir: Path):
    def reset(backend, *args, **kwargs):
        result = moto(backend, *args, **kwargs)
        instance_metadata.stop_all()
        ssh_access.forget_all(state_dir)
        machine_images.forget_all(state_dir)
        return result

    return reset
