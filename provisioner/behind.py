"""Rebake the apps whose newest image is on an older image of their foundation.

    invoke bake --behind-foundation NAME [--dry-run]

The plan comes first, read from AWS (each app's newest image and its kiln:foundation-ami tag
against the foundation's parameter): which apps are behind, the release each would be rebaked
at (the same version-release: the published package is reused) and on which image. Then each is
baked in turn, as `invoke bake --app APP --version V --iteration R` would: same package, new
base, so a new image.
"""

from __future__ import annotations

from cloud import apps, foundations
from cloud.aws import Aws
from cloud.console import say
from cloud.errors import KilnError


def run(aws: Aws, name: str, dry_run: bool = False) -> dict:
    entries = foundations.behind(aws, name)
    todo = [e for e in entries if e["behind"]]
    top = entries[0]["newest"] if entries else foundations.current(aws, name)
    newest = top.get("image_id") or top.get("ImageId")
    say(f"bake: foundation {name}'s newest image is {newest}; {len(entries)} app(s) on it, "
        f"{len(todo)} behind")
    for entry in entries:
        say(f"bake: {_plan_line(entry, newest, dry_run)}")
    plan = {"foundation": name, "image_id": newest, "apps": entries,
            "rebake": [{"app": e["app"], "version": e["version"], "release": e["release"]}
                       for e in todo]}
    if dry_run:
        return {"dry_run": True, **plan}
    from provisioner import bake

    baked, failed = [], []
    for entry in todo:
        config = apps.for_app(aws.settings, entry["app"])
        try:
            baked.append(bake.run(aws.with_settings(config), config, entry["version"],
                                  iteration=entry["release"]))
        except KilnError as error:  # the others still get their bake; the failure is said
            say(f"bake: {entry['app']} {entry['version']}-{entry['release']} failed: {error}")
            failed.append({"app": entry["app"], "error": str(error)})
    if failed:
        raise KilnError(f"bake --behind-foundation {name}: {len(failed)} of {len(todo)} "
                        f"rebake(s) failed; first: {failed[0]['app']}: {failed[0]['error']}")
    return {**plan, "baked": [{"app": r["app"], "image_id": r["image_id"],
                               "version": r["version"], "release": r["release"]}
                              for r in baked]}


def _plan_line(entry: dict, newest: str, dry_run: bool) -> str:
    app = entry["app"]
    if not entry["image_id"]:
        return f"{app}: no image yet; nothing to rebake (bake it with --app {app})"
    release = f"{entry['version']}-{entry['release']}"
    if not entry["behind"]:
        return f"{app}: {release} ({entry['image_id']}) is on {newest} already"
    verb = "would rebake" if dry_run else "rebaking"
    on = entry["on"]
    return (f"{app}: {verb} {release} on {newest} (its image {entry['image_id']} is on "
            f"{on['version'] or 'another base'} {on['image_id'] or ''})").rstrip()
