"""CreateImage with a `snapshot` TagSpecification, which moto 5 answers with a 500.

As on AWS: the tags of a `snapshot` TagSpecification go on every snapshot CreateImage makes, at
creation, beside the `image` tags, so the snapshots are never untagged.
(https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html)
"""

from __future__ import annotations

from pathlib import Path

from moto.ec2.models.amis import AmiBackend


def _tag_snapshots(create_image):
    def create(self, instance_id, name, description, tag_specifications):
        specs = tag_specifications or []
        snapshot_tags = [t for s in specs if s["ResourceType"] == "snapshot" for t in s["Tags"]]
        others = [s for s in specs if s["ResourceType"] != "snapshot"]
        image = create_image(self, instance_id, name, description, others)
        for tag in snapshot_tags:
            image.ebs_snapshot.add_tag(tag["Key"], tag["Value"])
        return image

    create.__wrapped__ = create_image
    return create


def apply(state_dir: Path) -> None:
    if not hasattr(AmiBackend.create_image, "__wrapped__"):
        AmiBackend.create_image = _tag_snapshots(AmiBackend.create_image)
