"""Kiln's images across the places it works in, and their retention (`invoke ami.prune`).

A place is one account and region: every account in kiln.accounts (the build account as is, the
others by AssumeRole) in the main region and each copy region. Pruning keeps the newest images of
an app per place — by version (semantic versioning), then creation time — and deregisters the
rest, deleting each one's snapshots right after, so no snapshot is orphaned. An image that a
launch template (any version), a server group (its launch configuration, or its `kiln:ami`
tag) or the SSM parameter a deploy or an app bake reads (a promotion's
/<prefix>/<app>/<account>/ami, a foundation's /<prefix>/foundation/<name>/ami) still uses is
never removed, whatever its age: the result says which one keeps it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import semver
from botocore.exceptions import ClientError
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from cloud import foundations
from cloud import tags as kiln_tags
from cloud.aws import Aws
from cloud.console import say
from cloud.errors import KilnError
from cloud.images import all_images
from provisioner.promote import parameter_name, regions
from provisioner.share import snapshot_ids

AMI_TAG = "kiln:ami"
FOUNDATION_PREFIX = foundations.app_label("")


def places(aws: Aws, unreachable: Callable[[str, KilnError], None] | None = None
           ) -> Iterator[tuple[Aws, str]]:
    """(session, region) for every account Kiln manages and every region it keeps images in.
    An account whose role cannot be assumed fails, or with `unreachable` is reported to it and
    skipped."""
    for name in [aws.account_name, *[n for n in aws.settings.accounts if n != aws.account_name]]:
        if name != aws.account_name and not aws.settings.accounts[name].role:
            say(f"skipping account {name}: kiln.accounts.{name}.role is not set")
            continue
        try:
            session = aws.account(name)
        except KilnError as error:
            if unreachable is None:
                raise
            unreachable(name, error)
            continue
        for region in regions(aws.settings):
            yield session, region


def snapshots_in_use(aws: Aws, region: str) -> set[str]:
    """Snapshots that some image of this account and region refers to."""
    found = all_images(aws.client("ec2", region), Owners=["self"])
    return {s for image in found for s in snapshot_ids(image)}


def version_key(image: dict) -> tuple:
    """Newest last: the kiln:version as a semantic version, then the creation time."""
    text = kiln_tags.from_list(image.get("Tags")).get(kiln_tags.VERSION, "")
    try:
        version = semver.Version.parse(text, optional_minor_and_patch=True)
    except (ValueError, TypeError):
        version = semver.Version(0)
    return version, image.get("CreationDate", "")


def prune(aws: Aws, app: str, keep: int, dry_run: bool = False) -> dict:
    """Deregister all but the newest `keep` images of `app` in every place, with their snapshots."""
    removed, kept = [], []
    for place, region in places(aws):
        ec2 = place.client("ec2", region)
        found = all_images(ec2, Owners=["self"], Filters=kiln_tags.filters(
            {kiln_tags.APP: app}))
        ordered = sorted(found, key=version_key, reverse=True)
        users = image_users(place, region, app) if ordered[keep:] else {}
        for index, image in enumerate(ordered):
            entry = _entry(place, region, image)
            if index < keep:
                kept.append({**entry, "reason": f"one of the {keep} newest"})
            elif image["ImageId"] in users:
                kept.append({**entry, "reason": "used by " + ", ".join(users[image["ImageId"]])})
            else:
                removed.append(entry)
                if not dry_run:
                    _remove(ec2, image)
    verb = "would remove" if dry_run else "removed"
    for entry in removed:
        say(f"ami.prune: {verb} {entry['image_id']} ({entry['version']}, {entry['account']}, "
            f"{entry['region']}) and {len(entry['snapshots'])} snapshot(s)")
    for entry in kept:
        if entry["reason"].startswith("used by"):
            say(f"ami.prune: keeping {entry['image_id']} ({entry['version']}): {entry['reason']}")
    say(f"ami.prune: {len(removed)} image(s) {verb}, {len(kept)} kept")
    return {"app": app, "keep": keep, "dry_run": dry_run, "removed": removed, "kept": kept}


def _entry(aws: Aws, region: str, image: dict) -> dict:
    return {"account": aws.account_name, "region": region, "image_id": image["ImageId"],
            "name": image.get("Name"), "created": image.get("CreationDate"),
            "version": kiln_tags.from_list(image.get("Tags")).get(kiln_tags.VERSION),
            "snapshots": snapshot_ids(image)}


def _remove(ec2, image: dict) -> None:
    """Deregister, then delete each snapshot: the snapshots are in use until the image is gone."""
    ec2.deregister_image(ImageId=image["ImageId"])
    for snapshot in snapshot_ids(image):
        delete_snapshot(ec2, snapshot)


def _still_in_use(error: BaseException) -> bool:
    return isinstance(error, ClientError) and \
        error.response["Error"]["Code"] == "InvalidSnapshot.InUse"


@retry(retry=retry_if_exception(_still_in_use), stop=stop_after_delay(120),
       wait=wait_exponential(0.5, max=10), reraise=True)
def delete_snapshot(ec2, snapshot_id: str) -> None:
    """Delete a snapshot of a just-deregistered image: EC2 may still see it in use for a moment
    (InvalidSnapshot.InUse), so that is retried; one already gone is fine."""
    try:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    except ClientError as error:
        if error.response["Error"]["Code"] != "InvalidSnapshot.NotFound":
            raise


def image_users(aws: Aws, region: str, app: str | None = None) -> dict[str, list[str]]:
    """image id → what still uses it: launch template versions, server groups and, for `app`,
    the SSM parameter that names its current image."""
    users: dict[str, list[str]] = {}
    if app:
        name, image_id = _named(aws, region, app)
        if image_id:
            users.setdefault(image_id, []).append(f"SSM parameter {name}")
    ec2 = aws.client("ec2", region)
    for template in _paged(ec2, "describe_launch_templates", "LaunchTemplates"):
        versions = _paged(ec2, "describe_launch_template_versions", "LaunchTemplateVersions",
                          LaunchTemplateId=template["LaunchTemplateId"])
        for version in versions:
            image_id = _resolve(aws, region, version["LaunchTemplateData"].get("ImageId"))
            users.setdefault(image_id, []).append(
                f"launch template {template['LaunchTemplateName']} "
                f"version {version['VersionNumber']}")
    autoscaling = aws.client("autoscaling", region)
    for group in _paged(autoscaling, "describe_auto_scaling_groups", "AutoScalingGroups"):
        name = group["AutoScalingGroupName"]
        tagged = {t["Key"]: t["Value"] for t in group.get("Tags", [])}.get(AMI_TAG)
        if tagged:
            users.setdefault(tagged, []).append(f"server group {name} ({AMI_TAG} tag)")
        if group.get("LaunchConfigurationName"):
            configs = autoscaling.describe_launch_configurations(
                LaunchConfigurationNames=[group["LaunchConfigurationName"]]
            )["LaunchConfigurations"]
            for config in configs:
                users.setdefault(config["ImageId"], []).append(
                    f"server group {name} (launch configuration "
                    f"{config['LaunchConfigurationName']})")
    users.pop(None, None)
    return {k: sorted(set(v)) for k, v in users.items()}


def _named(aws: Aws, region: str, app: str) -> tuple[str, str | None]:
    """The parameter that names `app`'s current image in this account (a foundation's, or the
    app's promotion parameter) and the image it names, if it exists."""
    foundation = app.removeprefix(FOUNDATION_PREFIX)
    name = (foundations.parameter_name(aws.settings, foundation) if foundation != app
            else parameter_name(aws.settings, app, aws.account_name))
    return name, _resolve(aws, region, f"resolve:ssm:{name}")


def _resolve(aws: Aws, region: str, image_id: str | None) -> str | None:
    """A launch template may name its image as resolve:ssm:<parameter>; read that parameter.
    Only a parameter that does not exist names nothing: any other failure stops the prune,
    which must not remove what it could not check."""
    prefix = "resolve:ssm:"
    if not image_id or not image_id.startswith(prefix):
        return image_id
    try:
        return aws.client("ssm", region).get_parameter(
            Name=image_id[len(prefix):])["Parameter"]["Value"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "ParameterNotFound":
            raise
        return None


def _paged(client, method: str, key: str, **params) -> list[dict]:
    return [item for page in client.get_paginator(method).paginate(**params)
            for item in page[key]]
