"""AMIs shared across accounts and copied across accounts and regions, as AWS documents them.

moto 5 stores launch permissions but never honours them, makes every image snapshot unencrypted
and ignores CopyImage's Encrypted, KmsKeyId and TagSpecifications. On AWS:

- DescribeImages in an account lists the images other accounts shared with it (launch permission
  for its id): by ImageIds, with ExecutableUsers=self/<id>, with Owners=<owner id>, and when no
  owner or executable user is given. The owner's tags are not shown to other accounts.
- CreateImage snapshots the instance's volumes, keeping their encryption and KMS key.
- CopyImage copies an image the caller can see, including one shared with it; copying a shared
  image needs createVolumePermission on its snapshots and, when they are encrypted, access to the
  owner's key (a grant or key-policy statement for the caller's account). The copy is encrypted
  with KmsKeyId, or the source key within one account and region, or the destination's default
  EBS key. TagSpecifications tag the copy at creation.
- The default EBS key (alias/aws/ebs) is an AWS managed key: DescribeKey says KeyManager AWS.
  (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/sharingamis-explicit.html,
  https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/CopyingAMIs.html)
DescribeImages, CreateImage and CopyImage themselves are sandbox.aws.ec2.images's; the functions
here are steps they take.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError, InvalidAMIIdError
from moto.ec2.models import amis as amis_module
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami
from moto.ec2.models.elastic_block_store import EBSBackend
from moto.ec2.utils import generic_filter

from sandbox.aws import seams


class AuthFailure(EC2ClientError):
    def __init__(self, message: str):
        super().__init__("AuthFailure", message)


class SharedImage:
    """A view of another account's image: everything but the owner's tags."""

    def __init__(self, image: Ami):
        self._image = image

    def __getattr__(self, name: str) -> Any:
        return getattr(self._image, name)

    def get_tags(self) -> list:
        return []

    tag_set = property(get_tags)
    tag_list = property(get_tags)
    tags = property(get_tags)

    def get_filter_value(self, filter_name: str, method_name: str | None = None) -> Any:
        if filter_name.startswith("tag"):
            return None
        return self._image.get_filter_value(filter_name, method_name)


def _shared_with(account_id: str, region: str) -> list[Ami]:
    """Images owned by other accounts in `region` with a launch permission for `account_id`."""
    found = []
    for owner, per_region in list(dict.items(ec2_backends)):
        backend = dict.get(per_region, region) if owner != account_id else None
        if backend is None:
            continue
        for image in list(backend.amis.values()):
            if {"UserId": account_id} in image.launch_permissions:
                found.append(image)
    return found


def describe_images(moto_describe, self, ami_ids=None, filters=None, exec_users=None,
                    owners=None):
    """moto's DescribeImages (`moto_describe`) of the account's own images, and the images other
    accounts shared with it."""
    me = self.account_id
    shared = _shared_with(me, self.region_name)
    if ami_ids:
        foreign = [i for i in shared if i.id in ami_ids]
        local_ids = [i for i in ami_ids if i not in {f.id for f in foreign}]
        local = moto_describe(self, ami_ids=local_ids) if local_ids else []
        return local + [SharedImage(i) for i in foreign]
    local = moto_describe(self, filters=filters, exec_users=list(exec_users or []),
                          owners=list(owners or []))
    users = {me if u == "self" else u for u in exec_users or []}
    wanted_owners = {o for o in owners or [] if o not in ("self", me)}
    if exec_users and me not in users:
        shared = []
    if owners:
        shared = [i for i in shared if i.owner_id in wanted_owners]
    views = [SharedImage(i) for i in shared]
    return local + (generic_filter(filters, views) if filters else views)


def keep_root_encryption(self, instance_id: str, image) -> None:
    """After CreateImage: the image's snapshot is encrypted as the instance's root volume is."""
    instance = self.get_instance(instance_id)
    devices = dict(instance.get_block_device_mapping)
    device = devices.get(instance.root_device_name) or next(iter(devices.values()), None)
    root = self.get_volume(device.volume_id) if device is not None else None
    if root is not None and root.encrypted:
        image.ebs_snapshot.encrypted = True
        image.ebs_snapshot.kms_key_id = root.kms_key_id


def copy_image(self, source_image_id, source_region, name=None, description=None,
               encrypted=False, kms_key_id=None, tags=None):
    source_backend = ec2_backends[self.account_id][source_region]
    found = source_backend.describe_images(ami_ids=[source_image_id])
    if not found:
        raise InvalidAMIIdError(source_image_id)
    source = getattr(found[0], "_image", found[0])
    snapshot = source.ebs_snapshot
    if source.owner_id != self.account_id:
        _check_readable(snapshot, self.account_id, source_region)
    image = Ami(self, amis_module.random_ami_id(), source_ami=source, name=name,
                description=description)
    if encrypted or snapshot.encrypted:
        same_place = source.owner_id == self.account_id and source_region == self.region_name
        key = kms_key_id or (snapshot.kms_key_id if same_place else None)
        image.ebs_snapshot.encrypted = True
        image.ebs_snapshot.kms_key_id = key or self._create_default_encryption_key()
    self.amis[image.id] = image
    for spec in tags or []:
        target = {"image": image, "snapshot": image.ebs_snapshot}.get(spec["ResourceType"])
        if target is not None:
            target.add_tags({t["Key"]: t["Value"] for t in spec.get("Tags", [])})
    return image


def _check_readable(snapshot, account_id: str, region: str) -> None:
    if account_id not in snapshot.create_volume_permission_userids:
        raise AuthFailure(f"Account {account_id} has no createVolumePermission on snapshot "
                          f"{snapshot.id}")
    if snapshot.encrypted and not _key_allows(snapshot.kms_key_id, account_id, region):
        raise AuthFailure(f"Account {account_id} cannot use KMS key {snapshot.kms_key_id}")


def _key_allows(key_arn: str | None, account_id: str, region: str) -> bool:
    from moto.kms.models import kms_backends

    if not key_arn:
        return False
    owner = key_arn.split(":")[4] if key_arn.startswith("arn:") else None
    kms = dict.get(kms_backends, owner or "") or {}
    backend = dict.get(kms, region)
    key = backend.keys.get(key_arn.split("/")[-1]) if backend else None
    if key is None:
        return False
    grantees = [g.grantee_principal for g in key.grants.values()
                if "Decrypt" in g.operations or "ReEncryptFrom" in g.operations]
    return any(account_id in p for p in grantees) or f":{account_id}:" in (key.policy or "")


def copy_image_response(self):
    self.error_on_dryrun()
    image = self.ec2_backend.copy_image(
        self._get_param("SourceImageId"), self._get_param("SourceRegion"),
        self._get_param("Name"), self._get_param("Description"),
        encrypted=str(self._get_param("Encrypted", False)).lower() == "true",
        kms_key_id=self._get_param("KmsKeyId"),
        tags=self._get_param("TagSpecifications", []))
    return ActionResult({"ImageId": image.id})


def _block_device_mappings(self) -> list[dict[str, Any]]:
    return [{"DeviceName": self.root_device_name,
             "Ebs": {"SnapshotId": self.ebs_snapshot.id, "VolumeSize": 15,
                     "DeleteOnTermination": False, "VolumeType": "standard",
                     "Encrypted": bool(self.ebs_snapshot.encrypted)}}]


def _default_key(original):
    def create(self) -> str:
        from moto.kms.models import kms_backends

        arn = original(self)
        kms_backends[self.account_id][self.region_name].describe_key(arn).key_manager = "AWS"
        return arn

    return create


def apply(state_dir: Path) -> None:
    seams.wrap(EBSBackend, "_create_default_encryption_key", _default_key,
               signature="(self) -> str", owner=__name__)
    seams.replace(Ami, "block_device_mappings", property(_block_device_mappings),
                  signature="(self) -> 'list[dict[str, Any]]'", owner=__name__)
