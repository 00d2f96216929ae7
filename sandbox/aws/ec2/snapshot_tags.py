"""CreateImage with a `snapshot` TagSpecification, which moto 5 answers with a 500.

As on AWS: the tags of a `snapshot` TagSpecification go on every snapshot CreateImage makes, at
creation, beside the `image` tags, so the snapshots are never untagged. (CreateImage itself is
sandbox.aws.ec2.images's; these are the steps it takes for the tags.)
(https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html)
"""

from __future__ import annotations


def split(tag_specifications) -> tuple[list, list]:
    """The specifications moto's CreateImage takes, and the snapshot tags it would choke on."""
    specs = tag_specifications or []
    snapshot_tags = [t for s in specs if s["ResourceType"] == "snapshot" for t in s["Tags"]]
    return [s for s in specs if s["ResourceType"] != "snapshot"], snapshot_tags


def tag(image, snapshot_tags: list) -> None:
    for item in snapshot_tags:
        image.ebs_snapshot.add_tag(item["Key"], item["Value"])
