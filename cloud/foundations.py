"""Foundation images: named bases an app bakes on, baked once for the fleet.

`kiln.foundations.<name>.bake` is a bake of its own (any kiln.bake keys over the defaults, with a
run list of its own and no app). `invoke bake --foundation NAME --version X` bakes it as an app
image is baked (tagged at creation, copied and shared alike) and points the SSM parameter
/<prefix>/foundation/<name>/ami of the build account, in each image region, at it. An app whose
`bake.foundation` names it bakes on the image that parameter names, and its image records which
(kiln:foundation, kiln:foundation-ami, kiln:foundation-version).

    for_foundation(settings, name) -> Settings     # the foundation's bake settings
    current(aws, name) -> dict                      # the image its parameter names, + version
    publish(aws, name, version, images) -> dict     # point the parameter at a new image
    behind(aws, name=None) -> list[dict]            # apps whose newest image is on an older one
"""

from __future__ import annotations

import semver
from botocore.exceptions import ClientError

from cloud import apps
from cloud import settings as settings_module
from cloud import tags as kiln_tags
from cloud.aws import Aws
from cloud.console import say
from cloud.errors import KilnError
from cloud.images import all_images

FOUNDATION = "kiln:foundation"
FOUNDATION_AMI = "kiln:foundation-ami"
FOUNDATION_VERSION = "kiln:foundation-version"


def app_label(name: str) -> str:
    """The kiln:app of a foundation's resources: no app's name (RPM names have no slash)."""
    return f"foundation/{name}"


def for_foundation(settings, name: str) -> settings_module.Settings:
    """The settings a foundation's bake runs with: its bake over kiln.bake, no app."""
    if name not in settings.foundations:
        known = ", ".join(sorted(settings.foundations)) or "none"
        raise KilnError(f"--foundation {name}: not in kiln.foundations (known: {known})")
    raw = apps._plain(settings)
    raw["bake"] = settings_module.foundation_bake(raw["bake"], settings.foundations[name])
    return settings_module.validate(raw, [f"kiln.foundations.{name}"], foundation=name)


def parameter_name(settings, name: str) -> str:
    return f"/{settings.stacks.prefix}/foundation/{name}/ami"


def current(aws: Aws, name: str, region: str | None = None) -> dict:
    """The foundation's newest image in the build account (DescribeImages' view of it), as
    its parameter names it; KilnError when it was never baked there."""
    parameter = parameter_name(aws.settings, name)
    region = region or aws.region
    try:
        image_id = aws.client("ssm", region).get_parameter(Name=parameter)["Parameter"]["Value"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "ParameterNotFound":
            raise
        raise KilnError(f"foundation {name}: no image in {aws.account_name}, {region} (SSM "
                        f"parameter {parameter} not found): bake it first, `invoke bake "
                        f"--foundation {name} --version X`") from None
    found = aws.client("ec2", region).describe_images(ImageIds=[image_id])["Images"]
    if not found or found[0].get("State") != "available":
        raise KilnError(f"foundation {name}: SSM parameter {parameter} names {image_id}, which "
                        f"is not an available image in {aws.account_name}, {region}")
    return found[0]


def version_of(image: dict) -> str:
    return kiln_tags.from_list(image.get("Tags")).get(kiln_tags.VERSION, "?")


def publish(aws: Aws, name: str, version: str, images: dict[str, str]) -> dict[str, str]:
    """Point the foundation's parameter in each region at that region's image, unless it names
    a newer version already (a late bake of an older one does not move the apps back)."""
    parameter, published = parameter_name(aws.settings, name), {}
    tags = kiln_tags.to_list(kiln_tags.kiln_tags(app_label(name), "foundation-parameter",
                                                 version=version, **{FOUNDATION: name}))
    for region, image_id in images.items():
        ssm = aws.client("ssm", region)
        newer = _newer_version(ssm, parameter, version)
        if newer:
            say(f"bake: {parameter} ({region}) stays at foundation {name} {newer}, newer than "
                f"{version}")
            continue
        values = {"Name": parameter, "Value": image_id, "Type": "String",
                  "DataType": "aws:ec2:image", "Description": f"Kiln foundation {name} {version}"}
        try:  # tagged at creation; PutParameter cannot tag while overwriting
            ssm.put_parameter(**values, Tags=tags)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ParameterAlreadyExists":
                raise
            ssm.put_parameter(**values, Overwrite=True)
            ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId=parameter, Tags=tags)
        published[region] = image_id
        say(f"bake: {parameter} ({region}) → {image_id} (foundation {name} {version})")
    return published


def _newer_version(ssm, parameter: str, version: str) -> str | None:
    try:
        found = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=parameter)
    except ClientError as error:
        if error.response["Error"]["Code"] == "InvalidResourceId":
            return None
        raise
    held = kiln_tags.from_list(found.get("TagList")).get(kiln_tags.VERSION)
    if held and semver.Version.is_valid(held) and \
            semver.Version.parse(held) > semver.Version.parse(version):
        return held
    return None


def apps_on(settings, name: str | None = None) -> dict[str, str]:
    """{app: foundation} of every app baked on a foundation (on `name` only, when given)."""
    found = {}
    for app in apps.names(settings):
        foundation = apps.for_app(settings, app).bake.foundation
        if foundation and (name is None or foundation == name):
            found[app] = foundation
    return found


def behind(aws: Aws, name: str | None = None, only: str | None = None,
           strict: bool = True) -> list[dict]:
    """Every app on a foundation (on `name` only; app `only` only) with its newest image and
    whether that image is on the foundation's newest one: app, foundation, image_id, version,
    release, on (foundation image and version), newest (likewise), behind. Not `strict`: a
    foundation never baked is an entry with its `error`, not a KilnError."""
    if name is not None and name not in aws.settings.foundations:
        for_foundation(aws.settings, name)  # the KilnError naming the known ones
    result, newest = [], {}
    for app, foundation in apps_on(aws.settings, name).items():
        if only and app != only:
            continue
        if foundation not in newest:
            try:
                newest[foundation] = current(aws, foundation)
            except KilnError as error:
                if strict:
                    raise
                newest[foundation] = error
        top = newest[foundation]
        if isinstance(top, KilnError):
            result.append({"app": app, "foundation": foundation, "behind": None,
                           "error": str(top)})
            continue
        image = newest_image(aws, app)
        found = kiln_tags.from_list((image or {}).get("Tags"))
        entry = {"app": app, "foundation": foundation,
                 "newest": {"image_id": top["ImageId"], "version": version_of(top)},
                 "image_id": (image or {}).get("ImageId"),
                 "version": found.get(kiln_tags.VERSION), "release": found.get(kiln_tags.RELEASE),
                 "on": {"image_id": found.get(FOUNDATION_AMI),
                        "version": found.get(FOUNDATION_VERSION)}}
        entry["behind"] = bool(image) and found.get(FOUNDATION_AMI) != top["ImageId"]
        result.append(entry)
    return result


def newest_image(aws: Aws, app: str) -> dict | None:
    """The app's most recently made available image in the build account and region."""
    images = all_images(aws.client("ec2"), Owners=["self"], Filters=kiln_tags.filters(
        {kiln_tags.APP: app, kiln_tags.ROLE: "image"}) + [
        {"Name": "state", "Values": ["available"]}])
    return max(images, key=lambda i: i.get("CreationDate", "")) if images else None


def lines(entries: list[dict]) -> list[str]:
    """What `invoke status` prints about apps on foundations."""
    out = []
    for e in entries:
        if e.get("error"):
            out.append(f"{e['app']}: {e['error']}")
            continue
        top = e["newest"]
        newest = f"foundation {e['foundation']} {top['version']} ({top['image_id']})"
        if not e["image_id"]:
            out.append(f"{e['app']}: on {newest}; no image baked yet")
        elif e["behind"]:
            out.append(f"{e['app']}: image {e['image_id']} ({e['version']}-{e['release']}) is "
                       f"BEHIND {newest}: baked on {e['on']['version'] or 'another base'} "
                       f"({e['on']['image_id'] or 'not a foundation'}); `invoke bake "
                       f"--behind-foundation {e['foundation']}` rebakes it")
        else:
            out.append(f"{e['app']}: image {e['image_id']} ({e['version']}-{e['release']}) is "
                       f"on {newest}, its newest")
    return out
