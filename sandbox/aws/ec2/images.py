"""The AMI lifecycle calls: CreateImage, CopyImage, DescribeImages and DeregisterImage.

Several behaviours meet in each (image_sharing, snapshot_tags, timing, machine_images): this
module alone replaces moto's, and takes their steps in one fixed order, written out below, so
that what a call does never depends on the order patches are applied in.
"""

from __future__ import annotations

from pathlib import Path

from sandbox.aws import seams, timing
from sandbox.aws.ec2 import image_sharing, machine_images, snapshot_tags


def apply(state_dir: Path) -> None:
    from moto.ec2.models.amis import AmiBackend
    from moto.ec2.responses.amis import AmisResponse

    seams.wrap(AmiBackend, "create_image", lambda moto: _create_image(moto, state_dir),
               signature="(self, instance_id: 'str', name: 'str', description: 'str', "
                         "tag_specifications: 'list[dict[str, Any]]') -> 'Ami'",
               owner=__name__)
    seams.replace(AmiBackend, "copy_image", _copy_image(state_dir),
                  signature="(self, source_image_id: 'str', source_region: 'str', name: 'str | "
                            "None' = None, description: 'str | None' = None) -> 'Ami'",
                  owner=__name__)
    seams.replace(AmisResponse, "copy_image", _copy_image_response,
                  signature="(self) -> moto.core.responses.ActionResult", owner=__name__)
    seams.wrap(AmiBackend, "describe_images", _describe_images,
               signature="(self, ami_ids: 'list[str] | None' = None, filters: 'dict[str, Any] | "
                         "None' = None, exec_users: 'list[str] | None' = None, owners: "
                         "'list[str] | None' = None) -> 'list[Ami]'", owner=__name__)
    seams.wrap(AmiBackend, "deregister_image", lambda moto: _deregister_image(moto, state_dir),
               signature="(self, ami_id: 'str') -> 'None'", owner=__name__)


def _create_image(moto, state_dir: Path):
    def create_image(self, instance_id, name, description, tag_specifications):
        # moto's call takes no `snapshot` TagSpecification: those tags go on afterwards.
        specs, snapshot_tag_list = snapshot_tags.split(tag_specifications)
        image = moto(self, instance_id, name, description, specs)
        image_sharing.keep_root_encryption(self, instance_id, image)
        snapshot_tags.tag(image, snapshot_tag_list)
        timing.start_pending(image, timing.IMAGE_PENDING)
        machine_images.captured(state_dir, image, instance_id)
        return image

    return create_image


def _copy_image(state_dir: Path):
    def copy_image(self, source_image_id, source_region, name=None, description=None,
                   encrypted=False, kms_key_id=None, tags=None):
        # A retried request (its ClientToken seen before) gets the same image back.
        image = timing.copied_before(self)
        if image is None:
            image = image_sharing.copy_image(self, source_image_id, source_region, name,
                                             description, encrypted=encrypted,
                                             kms_key_id=kms_key_id, tags=tags)
            timing.copy_pending(self, image)
        machine_images.copied(state_dir, source_image_id, image)
        return image

    return copy_image


def _copy_image_response(self):
    # moto's handler drops ClientToken and CopyImage's encryption and tags: image_sharing's
    # reads them all, and the token reaches the backend's CopyImage above through timing.
    with timing.client_token(self._get_param("ClientToken")):
        return image_sharing.copy_image_response(self)


def _describe_images(moto):
    def describe_images(self, ami_ids=None, filters=None, exec_users=None, owners=None):
        # The account's images and those shared with it; then only those visible by now.
        images = image_sharing.describe_images(moto, self, ami_ids, filters, exec_users, owners)
        return timing.visible(images, ami_ids)

    return describe_images


def _deregister_image(moto, state_dir: Path):
    def deregister_image(self, ami_id):
        snapshots = timing.snapshots_of(self, ami_id)
        moto(self, ami_id)
        timing.release_late(snapshots)
        machine_images.deregistered(state_dir, ami_id)

    return deregister_image
