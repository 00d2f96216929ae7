"""Promote a baked image into another account: that account gets its own, re-encrypted copy.

Launching straight from the build account's image would tie production to the build account's
key and image lifetime. Instead, in the target account (reached by AssumeRole with ExternalId):
the shared image is confirmed visible, copied (CopyImage, every image region at once) with
the target's own KMS key, waited for, tagged again (tags do not cross accounts) plus
`kiln:promoted-from`, and recorded in the release record and in the SSM parameter
/<stacks.prefix>/<app>/<env>/ami. Promoting again finds the copy by its tags and only refreshes
the records.
"""

from __future__ import annotations

import concurrent.futures
from datetime import UTC, datetime

from botocore.exceptions import ClientError
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from cloud import stacks
from cloud import tags as kiln_tags
from cloud.aws import Aws, account_spec
from cloud.console import say
from cloud.errors import KilnError
from cloud.images import all_images
from provisioner import record, share, waits

PROMOTED_FROM = "kiln:promoted-from"
SOURCE_ACCOUNT = "kiln:source-account"
# Tags of the build account's image that describe it there only.
NOT_CARRIED = {share.COPIED_FROM}


class NotVisible(Exception):
    """The target account does not see the shared image (yet)."""


def parameter_name(settings, app: str, env: str) -> str:
    """/<prefix>/<app>/<account>/ami: the deployer's policy grants these only
    (parameter/<prefix>/*/ami), not the app secrets that live beside them."""
    return f"/{settings.stacks.prefix}/{app}/{env}/ami"


def regions(settings) -> list[str]:
    """Where Kiln keeps images: the main region, then the copy regions."""
    return list(dict.fromkeys([settings.aws.region, *settings.bake.copy_regions]))


def promote(aws: Aws, app: str, version: str, to: str) -> dict:
    """Promote `app` `version` (X.Y.Z: its newest release; X.Y.Z-R: release R) from the build
    account to account `to` in every image region."""
    account_spec(aws.settings, to)
    if to == aws.account_name:
        raise KilnError(f"--to {to}: that is the build account; promote to another account")
    places = regions(aws.settings)
    first = find_release(aws, app, version, places[0])
    found = kiln_tags.from_list(first.get("Tags"))
    version, release = found.get(kiln_tags.VERSION, version), found.get(kiln_tags.RELEASE)
    sources = {places[0]: first, **{region: find_image(aws, app, version, region, release)
                                    for region in places[1:]}}
    target = aws.account(to)
    # Every region's key first: a missing one fails before anything is copied.
    keys = {region: stacks.ami_key(target, region) for region in sources}
    promotions = _promote_all(aws, target, sources, keys, app, version)
    previous = record.load(aws.settings, app, version, release).get("promotions", [])
    kept = [p for p in previous
            if (p.get("account"), p.get("region")) not in {(to, r) for r in sources}]
    where = record.write(aws.settings, app, version, {"promotions": kept + promotions}, release)
    name = kiln_tags.release_id(found)
    say(f"promote: {app} {name} is in account {to} "
        f"({', '.join(p['image_id'] + ' in ' + p['region'] for p in promotions)}); "
        f"release record {where}")
    return {"app": app, "version": version, "release": release, "to": to,
            "promotions": promotions}


def find_release(aws: Aws, app: str, text: str, region: str) -> dict:
    """The image a `--version` names: X.Y.Z-R that release, X.Y.Z its newest release."""
    readings = kiln_tags.release_readings(text)
    for version, release in readings:
        images = _images(aws, app, version, region, release)
        if images:
            return kiln_tags.newest_release(images)
    raise KilnError(f"no image of {app} {text} in account {aws.account_name}, {region}: "
                    f"bake it first (invoke bake --app {app} --version {readings[0][0]})")


def find_image(aws: Aws, app: str, version: str, region: str, release: str | None = None
               ) -> dict:
    """The build account's newest available image of `app` `version` (and `release`)."""
    images = _images(aws, app, version, region, release)
    if not images:
        name = f"{version}-{release}" if release else version
        raise KilnError(f"no image of {app} {name} in account {aws.account_name}, {region}: "
                        f"bake it first (invoke bake --app {app} --version {version})")
    return kiln_tags.newest_release(images)


def _images(aws: Aws, app: str, version: str, region: str, release: str | None) -> list[dict]:
    wanted = {kiln_tags.APP: app, kiln_tags.VERSION: version, kiln_tags.ROLE: "image"}
    if release:
        wanted[kiln_tags.RELEASE] = release
    images = all_images(aws.client("ec2", region), Owners=["self"],
                        Filters=kiln_tags.filters(wanted)
                        + [{"Name": "state", "Values": ["available"]}])
    return [i for i in images if PROMOTED_FROM not in kiln_tags.from_list(i.get("Tags"))]


def _promote_all(build: Aws, target: Aws, sources: dict[str, dict], keys: dict[str, str],
                 app: str, version: str) -> list[dict]:
    """Each region's copy at once, as the bake's region copies: a copy takes many minutes on
    AWS, and the regions do not wait for each other. Clients are made first, since boto3
    sessions are not safe to create clients from in threads."""
    for region in sources:
        build.client("ec2", region), build.client("kms", region)
        target.client("ec2", region), target.client("ssm", region)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(sources)) as pool:
        futures = [pool.submit(_promote_one, build, target, source, region, keys[region], app,
                               version) for region, source in sources.items()]
        return [future.result() for future in futures]


def _promote_one(build: Aws, target: Aws, source: dict, region: str, key: str, app: str,
                 version: str) -> dict:
    source_id = source["ImageId"]
    share.share_image(build, source_id, region, [target.account_name])
    _visible(target, source_id, region)
    ec2 = target.client("ec2", region)
    existing = share.copies_of(ec2, {PROMOTED_FROM: source_id}, ["pending", "available"])
    tags = {**{k: v for k, v in kiln_tags.from_list(source.get("Tags")).items()
               if k not in NOT_CARRIED and not k.startswith("aws:")},
            PROMOTED_FROM: source_id, SOURCE_ACCOUNT: build.account_id}
    if existing:
        image_id = existing[0]["ImageId"]
        say(f"promote: account {target.account_name} has {image_id} from {source_id} already")
    else:
        image_id = ec2.copy_image(
            SourceImageId=source_id, SourceRegion=region, Name=source["Name"],
            Description=f"{app} {version} promoted from {build.account_id}/{source_id}",
            Encrypted=True, KmsKeyId=key, ClientToken=share.client_token(
                ec2, f"kiln-promote-{source_id}", {PROMOTED_FROM: source_id}),
            TagSpecifications=[kiln_tags.spec("image", tags), kiln_tags.spec("snapshot", tags)],
        )["ImageId"]
        say(f"promote: copying {source_id} into account {target.account_name} as {image_id} "
            f"(re-encrypted with {key.split('/')[-1]})")
    waits.image_available(target, image_id, region=region, who="promote")
    if existing:  # tags may have been removed by hand; put them back
        ec2.create_tags(Resources=[image_id], Tags=kiln_tags.to_list(tags))
    name = _parameter(target, region, app, version, image_id)
    return {"account": target.account_name, "account_id": target.account_id, "region": region,
            "image_id": image_id, "source_image_id": source_id, "parameter": name,
            "promoted_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _visible(target: Aws, image_id: str, region: str) -> None:
    """Wait (bounded) until the target account sees the shared image: sharing is eventual."""

    @retry(stop=stop_after_delay(120), wait=wait_exponential(0.2, max=10),
           retry=retry_if_exception_type(NotVisible), reraise=True)
    def look() -> None:
        try:
            target.client("ec2", region).describe_images(ImageIds=[image_id])["Images"][0]
        except (ClientError, IndexError) as error:
            raise NotVisible(str(error)) from None

    try:
        look()
    except NotVisible:
        raise KilnError(f"image {image_id} is not visible to account {target.account_name} "
                        f"({target.account_id}) in {region} after sharing it") from None


def _parameter(target: Aws, region: str, app: str, version: str, image_id: str) -> str:
    name = parameter_name(target.settings, app, target.account_name)
    ssm = target.client("ssm", region)
    ssm.put_parameter(Name=name, Value=image_id, Type="String", Overwrite=True,
                      DataType="aws:ec2:image", Description=f"{app} {version}")
    # PutParameter cannot tag while overwriting; the version goes on as a tag afterwards.
    ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId=name, Tags=kiln_tags.to_list(
        kiln_tags.kiln_tags(app, "image-parameter", version=version)))
    return name
