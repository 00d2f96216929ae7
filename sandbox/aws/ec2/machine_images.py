"""Images hold the machine (see sandbox.machines.images).

AWS behaviour mirrored here: CreateImage of an instance that is a sandbox machine keeps its
filesystem (its writable layer over the layers it was launched from) as the image's content, and
an instance launched from the image runs on it; CopyImage (to other regions and accounts) shares
the layers; DeregisterImage frees the layers no other image uses; a reset forgets them all.
"""

from __future__ import annotations

import functools
from pathlib import Path

from sandbox.machines import images
from sandbox.machines import instances as machines


def apply(state_dir: Path) -> None:
    from moto.ec2.models.amis import AmiBackend
    from moto.moto_api._internal.models import MotoAPIBackend

    AmiBackend.create_image = _after_create(AmiBackend.create_image, state_dir)
    AmiBackend.copy_image = _after_copy(AmiBackend.copy_image, state_dir)
    AmiBackend.deregister_image = _after_deregister(AmiBackend.deregister_image, state_dir)
    MotoAPIBackend.reset = _after_reset(MotoAPIBackend.reset, state_dir)


def _after_create(create_image, state_dir: Path):
    @functools.wraps(create_image)
    def wrapper(backend, instance_id, *args, **kwargs):
        image = create_image(backend, instance_id, *args, **kwargs)
        upper = machines.upper(state_dir, instance_id) if instance_id.startswith("i-") else None
        if upper is not None and upper.is_dir():
            images.capture(state_dir, image.id, instance_id, upper)
        return image

    return wrapper


def _after_copy(copy_image, state_dir: Path):
    @functools.wraps(copy_image)
    def wrapper(backend, source_image_id, *args, **kwargs):
        image = copy_image(backend, source_image_id, *args, **kwargs)
        images.share(state_dir, source_image_id, image.id)
        return image

    return wrapper


def _after_deregister(deregister_image, state_dir: Path):
    @functools.wraps(deregister_image)
    def wrapper(backend, ami_id, *args, **kwargs):
        result = deregister_image(backend, ami_id, *args, **kwargs)
        images.release(state_dir, ami_id)
        return result

    return wrapper


def _after_reset(reset, state_dir: Path):
    @functools.wraps(reset)
    def wrapper(backend, *args, **kwargs):
        result = reset(backend, *args, **kwargs)
        images.forget_all(state_dir)
        return result

    return wrapper
