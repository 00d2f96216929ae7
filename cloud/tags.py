"""Kiln's tags: the state of everything Kiln creates lives in them, applied at creation."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

APP = "kiln:app"
VERSION = "kiln:version"
RELEASE = "kiln:release"  # the package iteration (RPM Release): a release is version-release
RUN_ID = "kiln:run-id"
ROLE = "kiln:role"
EXPIRES_AT = "kiln:expires-at"
MANAGED_BY = "kiln:managed-by"


def new_run_id() -> str:
    """A sortable, unique id for one run of a task: UTC time plus random hex."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def expires_at(minutes: int) -> str:
    """The ISO-8601 UTC time `minutes` from now, as the janitor reads it."""
    return (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_expired(value: str | None, now: datetime | None = None) -> bool:
    if not value:
        return False
    when = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return when <= (now or datetime.now(UTC))


def kiln_tags(app: str, role: str, run_id: str | None = None, version: str | None = None,
              expires_in_minutes: int | None = None, **extra: str) -> dict[str, str]:
    """The standard tag set; None values are left out, extra keys are added as given."""
    tags = {MANAGED_BY: "kiln", APP: app, ROLE: role, RUN_ID: run_id, VERSION: version}
    if expires_in_minutes is not None:
        tags[EXPIRES_AT] = expires_at(expires_in_minutes)
    tags.update(extra)
    return {k: str(v) for k, v in tags.items() if v is not None}


def to_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def from_list(tags: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}


def spec(resource_type: str, tags: dict[str, str]) -> dict:
    """One TagSpecifications entry, so the resource is never untagged."""
    return {"ResourceType": resource_type, "Tags": to_list(tags)}


def filters(tags: dict[str, str]) -> list[dict]:
    """EC2-style describe filters matching every given tag."""
    return [{"Name": f"tag:{k}", "Values": [v]} for k, v in sorted(tags.items())]


def release_id(tags: dict[str, str]) -> str:
    """version-release (e.g. 2.4.0-2) from a resource's tags; just the version without a release."""
    version, release = tags.get(VERSION, "?"), tags.get(RELEASE)
    return f"{version}-{release}" if release else version


def release_readings(text: str) -> list[tuple[str, str | None]]:
    """What a `--version` may mean, most specific first: 2.4.0-2 is version 2.4.0 release 2, or
    (semver allows a numeric pre-release) version 2.4.0-2 of any release; 2.4.0 is any release."""
    head, _, tail = text.rpartition("-")
    if head and tail.isdigit():
        return [(head, tail), (text, None)]
    return [(text, None)]


def newest_release(images: list[dict]) -> dict:
    """The image of the highest release (then the newest) among images of one version."""
    def key(image: dict) -> tuple:
        release = from_list(image.get("Tags")).get(RELEASE, "")
        return (int(release) if release.isdigit() else -1, image.get("CreationDate", ""))

    return max(images, key=key)
