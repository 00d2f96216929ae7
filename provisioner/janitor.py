"""Find and remove what an interrupted run left behind (kill -9, a lost machine).

Every temporary resource Kiln creates carries `kiln:expires-at`, and bake resources a
`kiln:role` (bake-instance, bake-key, bake-sg, bake-volume) and `kiln:run-id`. A bake resource is
a leftover as soon as its run is known dead, the way a dead lock holder is: a bake holds the lease
bake/<app>/<version> in the build account's lock table while it runs, renewed by a heartbeat, so
its run is dead once that lease is released, has lapsed (a minute after a kill -9 elsewhere) or
is held by a process gone from this host (at once). Otherwise a resource is a leftover when its
expiry has passed (the last resort, e.g. before the lock table exists), or when its run finished
(an image of that run exists). Each
kind is found by its own service's describe call with tag filters — the tagging API does not list
key pairs and still lists terminated instances — in every region and account Kiln manages.

Removal follows dependencies: instances first (waiting until terminated), then security groups
(retrying DependencyViolation while network interfaces detach), key pairs, volumes, and snapshots
whose image no longer exists (retrying InvalidSnapshot.InUse, EC2's answer for a moment after
DeregisterImage). Other areas add their own kinds with `cloud.sweepers.register`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from botocore.exceptions import ClientError
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from cloud import locks, sweepers
from cloud import tags as kiln_tags
from cloud.aws import Aws
from cloud.console import say
from cloud.errors import KilnError
from cloud.images import all_images
from cloud.sweepers import Leftover, Sweeper
from provisioner import images

TEMPORARY_ROLES = ["bake-instance", "bake-key", "bake-sg", "bake-volume"]


def run(aws: Aws, dry_run: bool = False, now: datetime | None = None) -> dict:
    """Find leftovers everywhere Kiln works; remove them unless `dry_run`. A kind of leftover that
    cannot be listed in a place (account and region), or a place that refuses removals, is
    reported in `failures`; the other kinds and places are still swept."""
    now = now or datetime.now(UTC)
    found: list[Leftover] = []
    plan = []
    failures: list[dict] = []
    table = locks.build_table(aws)
    waiting: dict[str, str] = {}
    if table is None:
        say("janitor: no lock table yet (invoke bootstrap): bake resources are judged by "
            "kiln:expires-at alone")

    def unreachable(name: str, error: KilnError) -> None:
        say(f"janitor: account {name}: {error}")
        failures.append({"account": name, "region": "*", "error": str(error)})

    for place, region in images.places(aws, unreachable):
        why = _judge(place, region, now, _run_state(aws, table, waiting))
        for sweeper in sorted(sweepers.SWEEPERS, key=lambda s: s.order):
            ok, batch = _in_place(place, region, failures, sweeper.find, place, region, why)
            if ok:
                found += batch
                plan.append((place, region, sweeper, batch))
    for item in found:
        say(f"janitor: {'would remove' if dry_run else 'removing'} {item.kind} {item.id} "
            f"({item.account}, {item.region}): {item.reason}")
    if not dry_run:
        _remove(plan, failures)
    for run_id, holder in waiting.items():
        say(f"janitor: leaving the resources of run {run_id}: it is alive (lease held by "
            f"{holder}); they go once it ends, or a minute after it dies")
    say(f"janitor: {len(found)} leftover(s) {'found' if dry_run else 'removed'}")
    return {"dry_run": dry_run, "leftovers": [item.as_dict() for item in found],
            "failures": failures}


def _remove(plan, failures: list[dict]) -> None:
    """Remove each place's batches in order; a place that fails stops only its own removals."""
    failed: set[tuple[str, str]] = set()
    for place, region, sweeper, batch in plan:
        where = (place.account_name, region)
        if not batch or where in failed:
            continue
        ok, _ = _in_place(place, region, failures, sweeper.remove, place, region, batch)
        if not ok:
            failed.add(where)


def _in_place(place: Aws, region: str, failures: list[dict], work: Callable, *args):
    """(True, work(*args)), or (False, None) after reporting why it failed in this account and
    region."""
    try:
        return True, work(*args)
    except (ClientError, KilnError) as error:
        message = str(error).splitlines()[0]
        say(f"janitor: account {place.account_name}, region {region}: {message}")
        failures.append({"account": place.account_name, "region": region, "error": message})
        return False, None


def _judge(aws: Aws, region: str, now: datetime,
           run_dead: Callable[[dict[str, str]], str | None]) -> Callable[[dict[str, str]],
                                                                         str | None]:
    """A function telling why a resource with these tags is a leftover, or None if it is not."""
    finished: set[str] | None = None

    def why(tags: dict[str, str]) -> str | None:
        nonlocal finished
        expires = tags.get(kiln_tags.EXPIRES_AT)
        if expires and _expired(expires, now):
            return f"expired at {expires}"
        run_id = tags.get(kiln_tags.RUN_ID)
        if run_id and tags.get(kiln_tags.ROLE) in TEMPORARY_ROLES:
            if finished is None:
                finished = _finished_runs(aws, region)
            if run_id in finished:
                return f"run {run_id} finished (its image exists)"
            return run_dead(tags)
        return None

    return why


def _run_state(aws: Aws, table: str | None, waiting: dict[str, str]):
    """A function telling why a bake resource's run is dead, or None while it may live; the live
    runs it saw go into `waiting` (run id → who holds the lease)."""
    seen: dict[tuple[str, str], dict | None] = {}

    def dead(tags: dict[str, str]) -> str | None:
        app, version = tags.get(kiln_tags.APP), tags.get(kiln_tags.VERSION)
        run_id = tags[kiln_tags.RUN_ID]
        if table is None or not app or not version:
            return None
        key = locks.bake_key(app, version)
        if key not in seen:
            seen[key] = locks.holder(aws, table, key)
        current = seen[key]
        if locks.alive(current) and current["owner"].endswith(f" run {run_id}"):
            waiting[run_id] = current["owner"]
            return None
        return f"run {run_id} is not running (no live lease on {key})"

    return dead


def _expired(value: str, now: datetime) -> bool:
    try:
        return kiln_tags.is_expired(value, now)
    except ValueError:
        return False  # not Kiln's format: leave it to a human


def _finished_runs(aws: Aws, region: str) -> set[str]:
    found = all_images(aws.client("ec2", region), Owners=["self"], Filters=[
        {"Name": "tag-key", "Values": [kiln_tags.RUN_ID]},
        {"Name": "state", "Values": ["available"]}])
    return {kiln_tags.from_list(i.get("Tags")).get(kiln_tags.RUN_ID) for i in found}


def _tagged_filters() -> list[dict]:
    return [{"Name": "tag-key", "Values": [kiln_tags.ROLE, kiln_tags.EXPIRES_AT]}]


def _leftovers(aws, region, kind, resources, id_key, why) -> list[Leftover]:
    result = []
    for resource in resources:
        tags = kiln_tags.from_list(resource.get("Tags"))
        reason = why(tags)
        if reason:
            result.append(Leftover(kind, resource[id_key], aws.account_name, region, reason,
                                   tags))
    return result


def _paged(client, method: str, key: str, **params) -> list[dict]:
    return [item for page in client.get_paginator(method).paginate(**params)
            for item in page[key]]


# -- instances -------------------------------------------------------------------------------
def _find_instances(aws, region, why):
    reservations = _paged(aws.client("ec2", region), "describe_instances", "Reservations",
                          Filters=_tagged_filters() + [{"Name": "instance-state-name", "Values": [
                              "pending", "running", "stopping", "stopped"]}])
    found = [i for r in reservations for i in r["Instances"]]
    return _leftovers(aws, region, "instance", found, "InstanceId", why)


def _remove_instances(aws, region, items):
    ec2 = aws.client("ec2", region)
    ids = [i.id for i in items]
    ec2.terminate_instances(InstanceIds=ids)
    ec2.get_waiter("instance_terminated").wait(InstanceIds=ids)


# -- security groups ---------------------------------------------------------------------------
def _find_groups(aws, region, why):
    found = _paged(aws.client("ec2", region), "describe_security_groups", "SecurityGroups",
                   Filters=_tagged_filters())
    return _leftovers(aws, region, "security-group", found, "GroupId", why)


def _dependency(error: BaseException) -> bool:
    return isinstance(error, ClientError) and \
        error.response["Error"]["Code"] == "DependencyViolation"


@retry(stop=stop_after_delay(300), wait=wait_exponential(1, max=15),
       retry=retry_if_exception(_dependency), reraise=True)
def _delete_group(ec2, group_id: str) -> None:
    _ignore_missing(ec2.delete_security_group, GroupId=group_id)


def _remove_groups(aws, region, items):
    ec2 = aws.client("ec2", region)
    for item in items:
        _delete_group(ec2, item.id)


# -- key pairs ---------------------------------------------------------------------------------
def _find_keys(aws, region, why):
    found = aws.client("ec2", region).describe_key_pairs(Filters=_tagged_filters())["KeyPairs"]
    return _leftovers(aws, region, "key-pair", found, "KeyName", why)


def _remove_keys(aws, region, items):
    ec2 = aws.client("ec2", region)
    for item in items:
        _ignore_missing(ec2.delete_key_pair, KeyName=item.id)


# -- volumes -----------------------------------------------------------------------------------
def _find_volumes(aws, region, why):
    # In-use volumes go with their instance (or wait for the next run, once it is gone).
    found = _paged(aws.client("ec2", region), "describe_volumes", "Volumes",
                   Filters=_tagged_filters() + [{"Name": "status", "Values": ["available"]}])
    return _leftovers(aws, region, "volume", found, "VolumeId", why)


def _remove_volumes(aws, region, items):
    ec2 = aws.client("ec2", region)
    for item in items:
        _ignore_missing(ec2.delete_volume, VolumeId=item.id)


# -- snapshots whose image is gone -------------------------------------------------------------
def _find_snapshots(aws, region, why):
    """Kiln's image snapshots that no image of this account and region refers to any more."""
    ec2 = aws.client("ec2", region)
    tagged = _paged(ec2, "describe_snapshots", "Snapshots", OwnerIds=["self"],
                    Filters=[{"Name": "tag-key", "Values": [kiln_tags.APP]}])
    if not tagged:
        return []
    in_use = images.snapshots_in_use(aws, region)
    orphans = [s for s in tagged if s["SnapshotId"] not in in_use]
    return [Leftover("snapshot", s["SnapshotId"], aws.account_name, region,
                     "its image no longer exists", kiln_tags.from_list(s.get("Tags")))
            for s in orphans]


def _remove_snapshots(aws, region, items):
    ec2 = aws.client("ec2", region)
    for item in items:
        # Its image may have been deregistered a moment ago: EC2 answers InvalidSnapshot.InUse
        # for a while after that, which images.delete_snapshot waits out.
        images.delete_snapshot(ec2, item.id)


def _ignore_missing(call, **params) -> None:
    """Deleting what is already gone (another janitor, the bake's own cleanup) is success."""
    try:
        call(**params)
    except ClientError as error:
        if not error.response["Error"]["Code"].endswith(".NotFound"):
            raise


for _sweeper in (Sweeper("instance", 10, _find_instances, _remove_instances),
                 Sweeper("security-group", 20, _find_groups, _remove_groups),
                 Sweeper("key-pair", 30, _find_keys, _remove_keys),
                 Sweeper("volume", 40, _find_volumes, _remove_volumes),
                 Sweeper("snapshot", 50, _find_snapshots, _remove_snapshots)):
    sweepers.register(_sweeper)
