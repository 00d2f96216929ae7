"""The image a bake starts from: a pinned id, a public SSM parameter, or a filter search.

`kiln.bake.base_ami` takes, first found wins: `id` (pinned; the image must exist and be
available); `filters` (EC2 DescribeImages filters, name → value or list of values) with `owners`
(account ids or aliases such as `amazon`), where the search must end in exactly one most recent
image (none, or two created at the same second, is an error naming the filters and owners); or
`parameter`, the SSM parameter Amazon keeps pointing at the newest image of a line (the default:
Amazon Linux 2023's, kernel-default; a name filter would also match other kernel lines).
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from cloud.aws import Aws
from cloud.errors import KilnError
from cloud.images import all_images


def resolve(aws: Aws, spec) -> dict:
    """The base image as DescribeImages returns it (ImageId, Name, CreationDate, …)."""
    if spec.get("id"):
        return _pinned(aws, spec["id"])
    if spec.get("filters"):
        return _most_recent(aws, spec["filters"], spec.get("owners") or [])
    if spec.get("parameter"):
        return _pinned(aws, _parameter(aws, spec["parameter"]), "parameter")
    raise KilnError("kiln.bake.base_ami: set id, filters (with owners) or parameter")


def _parameter(aws: Aws, name: str) -> str:
    try:
        return aws.client("ssm").get_parameter(Name=name)["Parameter"]["Value"]
    except ClientError as error:
        if error.response["Error"]["Code"] == "ParameterNotFound":
            raise KilnError(f"kiln.bake.base_ami.parameter: SSM parameter {name} not found in "
                            f"region {aws.region}") from None
        raise


def _pinned(aws: Aws, image_id: str, field: str = "id") -> dict:
    try:
        images = aws.client("ec2").describe_images(ImageIds=[image_id])["Images"]
    except ClientError as error:
        if error.response["Error"]["Code"] in ("InvalidAMIID.NotFound", "InvalidAMIID.Malformed"):
            images = []
        else:
            raise
    if not images:
        raise KilnError(f"kiln.bake.base_ami.{field}: image {image_id} not found in "
                        f"region {aws.region} of account {aws.account_id}")
    image = images[0]
    if image.get("State", "available") != "available":
        raise KilnError(f"kiln.bake.base_ami.{field}: image {image_id} is "
                        f"{image['State']}, not available")
    return image


def _most_recent(aws: Aws, filters: dict, owners: list[str]) -> dict:
    params = {"Filters": ec2_filters({**filters, "state": "available"})}
    if owners:
        params["Owners"] = owners
    images = all_images(aws.client("ec2"), **params)
    described = f"filters {_show(filters)} and owners {', '.join(owners) or 'any'}"
    if not images:
        raise KilnError(f"kiln.bake.base_ami: no available image matches {described} "
                        f"in region {aws.region}")
    images.sort(key=lambda i: i.get("CreationDate", ""), reverse=True)
    newest = images[0].get("CreationDate", "")
    tied = [i for i in images if i.get("CreationDate", "") == newest]
    if len(tied) > 1:
        names = ", ".join(f"{i['ImageId']} ({i.get('Name')})" for i in tied)
        raise KilnError(f"kiln.bake.base_ami: {len(tied)} images match {described} and were "
                        f"created at the same time ({newest}): {names}; narrow the filters or "
                        f"pin kiln.bake.base_ami.id")
    return images[0]


def ec2_filters(filters: dict) -> list[dict]:
    out = []
    for name, value in sorted(filters.items()):
        values = value if isinstance(value, list | tuple) else [value]
        out.append({"Name": name, "Values": [str(v) for v in values]})
    return out


def _show(filters: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(filters.items()))

