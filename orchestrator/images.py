"""Which AMI a server group runs: a baked version of the app, or an AMI id given outright.

Images are looked up in the deploy account and region, where promotion copied and re-tagged them
(kiln:app, kiln:version, kiln:role image); an image that is not available there cannot launch.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import ClientError

from cloud import tags
from cloud.errors import KilnError
from cloud.images import all_images
from orchestrator.environment import Environment


@dataclass(frozen=True)
class Image:
    id: str
    version: str
    name: str
    release: str | None = None  # the package iteration; version-release names the release

    @property
    def release_id(self) -> str:
        return f"{self.version}-{self.release}" if self.release else self.version


def resolve(env: Environment, version: str | None = None, ami: str | None = None) -> Image:
    if bool(version) == bool(ami):
        raise KilnError("give exactly one of --version or --ami")
    return by_id(env, ami) if ami else by_version(env, version)


def by_version(env: Environment, text: str) -> Image:
    """The image `--version` names: X.Y.Z-R that release, X.Y.Z its newest release."""
    readings = tags.release_readings(text)
    for version, release in readings:
        wanted = {tags.APP: env.app, tags.VERSION: version, tags.ROLE: "image"}
        if release:
            wanted[tags.RELEASE] = release
        images = all_images(env.client("ec2"), Owners=["self"], Filters=tags.filters(wanted) + [
            {"Name": "state", "Values": ["available"]}])
        if images:
            return _image(tags.newest_release(images), version)
    raise KilnError(f"no available image of {env.app} version {text} in {env.where}: bake and "
                    f"promote it first (`invoke bake --app {env.app} --version {readings[0][0]}`,"
                    f" then `invoke ami.promote --app {env.app} --version {text} --to "
                    f"{env.aws.account_name}`)")


def _image(image: dict, version: str) -> Image:
    found = tags.from_list(image.get("Tags"))
    return Image(image["ImageId"], found.get(tags.VERSION) or version, image.get("Name", ""),
                 found.get(tags.RELEASE))


def by_id(env: Environment, ami: str) -> Image:
    try:
        images = env.client("ec2").describe_images(ImageIds=[ami])["Images"]
    except ClientError as error:
        code = error.response["Error"]["Code"]
        if code not in ("InvalidAMIID.NotFound", "InvalidAMIID.Malformed",
                        "InvalidAMIID.Unavailable"):
            raise
        images = []
    if not images or images[0].get("State") != "available":
        state = images[0].get("State") if images else "not found"
        raise KilnError(f"AMI {ami} is not available in {env.where} ({state})")
    image = images[0]
    found = tags.from_list(image.get("Tags"))
    if found.get(tags.APP) not in (None, env.app):
        raise KilnError(f"AMI {ami} is an image of {found[tags.APP]}, not {env.app}")
    return Image(ami, found.get(tags.VERSION) or image.get("Name") or ami, image.get("Name", ""),
                 found.get(tags.RELEASE))
