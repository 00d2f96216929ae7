"""Images hold the machine (see sandbox.machines.images).

AWS behaviour mirrored here: CreateImage of an instance that is a sandbox machine keeps its
filesystem (its writable layer over the layers it was launched from) as the image's content, and
an instance launched from the image runs on it; CopyImage (to other regions and accounts) shares
the layers; DeregisterImage frees the layers no other image uses; a reset forgets them all.
These are steps of the calls sandbox.aws.ec2.images and sandbox.aws.reset own.
"""

from __future__ import annotations

from pathlib import Path

from sandbox.machines import images
from sandbox.machines import instances as machines


def captured(state_dir: Path, image, instance_id: str) -> None:
    """After CreateImage: the instance's filesystem becomes the image's content."""
    upper = machines.upper(state_dir, instance_id) if instance_id.startswith("i-") else None
    if upper is not None and upper.is_dir():
        images.capture(state_dir, image.id, instance_id, upper)


def copied(state_dir: Path, source_image_id: str, image) -> None:
    """After CopyImage: the copy shares the source's layers."""
    images.share(state_dir, source_image_id, image.id)


def deregistered(state_dir: Path, ami_id: str) -> None:
    """After DeregisterImage: the layers no other image uses are freed."""
    images.release(state_dir, ami_id)


def forget_all(state_dir: Path) -> None:
    """After a reset."""
    images.forget_all(state_dir)
