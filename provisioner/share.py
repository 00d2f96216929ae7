"""Share an image with the accounts Kiln knows, and copy it to other regions.

Sharing an EBS-backed, encrypted image takes three permissions per account, all granted here:
the image's launch permission (only ever to an account id, never to the public group), the
createVolumePermission of each of its snapshots, and a KMS grant on the key that encrypts them
(https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/sharingamis-explicit.html). An image encrypted
with the AWS managed key (alias/aws/ebs) cannot be shared: that key's policy cannot be changed.
Every step is idempotent, so a share or copy can be run again after any failure.
"""

from __future__ import annotations

import concurrent.futures
from datetime import UTC, datetime, timedelta

from cloud import stacks
from cloud import tags as kiln_tags
from cloud.aws import Aws, account_spec
from cloud.console import say
from cloud.errors import KilnError
from cloud.images import all_images
from provisioner import waits

COPIED_FROM = "kiln:copied-from"
# What the other account needs on the key to launch or copy the image (AWS's list for sharing
# encrypted AMIs and snapshots). No CreateGrant: the grant could otherwise be passed on; EC2 in that
# account makes its grants under the key policy's CreateGrant-for-AWS-resources statement.
GRANT_OPERATIONS = ["Decrypt", "DescribeKey", "ReEncryptFrom", "ReEncryptTo",
                    "GenerateDataKeyWithoutPlaintext"]
GRANT_PREFIX = "kiln-share-"


def share_image(aws: Aws, image_id: str, region: str, account_names: list[str],
                retire_others: bool = False) -> list[dict]:
    """Grant each named account launch, snapshot and key access; one result per account.
    `retire_others`: the named accounts are all the image's key is shared with, so Kiln's
    grants for any other account are retired."""
    accounts = {name: _account_id(aws, name) for name in account_names}
    if not accounts:
        return []
    ec2 = aws.client("ec2", region)
    image = describe_image(aws, image_id, region)
    if image.get("Public"):
        raise KilnError(f"image {image_id} in {region} is public: Kiln only shares with listed "
                        f"accounts; make it private first")
    snapshots = snapshot_ids(image)
    key = _encryption_key(aws, image_id, region, snapshots)
    ids = sorted(set(accounts.values()))
    ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={
        "Add": [{"UserId": account_id} for account_id in ids]})
    for snapshot in snapshots:
        ec2.modify_snapshot_attribute(SnapshotId=snapshot, Attribute="createVolumePermission",
                                      OperationType="add", UserIds=ids)
    grants = _grants(aws, key, region, ids, retire_others) if key else {}
    say(f"share: {image_id} ({region}) with {', '.join(accounts)}"
        + (f"; key {key.split('/')[-1]} granted" if key else "; not encrypted"))
    return [{"account": name, "id": account_id, "region": region, "image_id": image_id,
             "launch_permission": True, "snapshots": snapshots,
             "kms_grant_id": grants.get(account_id)}
            for name, account_id in accounts.items()]


def copy_to_regions(aws: Aws, image_id: str, regions: list[str], tags: dict[str, str],
                    share: list[str] | tuple = (), source_region: str | None = None
                    ) -> dict[str, str]:
    """Copy the image into each region in parallel, encrypted with that region's Kiln key.

    Each copy is tagged at creation (tags do not cross regions), waited for, given the configured
    deprecation time and shared with `share`. A copy made before (same source) is reused.
    """
    source_region = source_region or aws.region
    targets = [r for r in dict.fromkeys(regions) if r != source_region]
    if not targets:
        return {}
    for name in share:
        _account_id(aws, name)
    source = describe_image(aws, image_id, source_region)
    # Read every region's key and make every client first: a missing key fails before any
    # copy starts, and boto3 sessions are not safe to create clients from in threads.
    keys = {r: stacks.ami_key(aws, r) for r in targets}
    for region in targets:
        aws.client("ec2", region), aws.client("kms", region)
    say(f"copy: {image_id} to {', '.join(targets)}")
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(targets)) as pool:
        futures = {r: pool.submit(_copy_one, aws, source, source_region, r, keys[r], tags, share)
                   for r in targets}
        return {r: f.result() for r, f in futures.items()}


def _copy_one(aws: Aws, source: dict, source_region: str, region: str, key: str,
              tags: dict[str, str], share) -> str:
    ec2 = aws.client("ec2", region)
    image_id = source["ImageId"]
    existing = copies_of(ec2, {COPIED_FROM: image_id}, ["pending", "available"])
    if existing:
        copy_id = existing[0]["ImageId"]
    else:
        copy_tags = {**tags, COPIED_FROM: image_id}
        copy_id = ec2.copy_image(
            SourceImageId=image_id, SourceRegion=source_region, Name=source["Name"],
            Description=source.get("Description") or f"{source['Name']} from {source_region}",
            Encrypted=True, KmsKeyId=key,
            ClientToken=client_token(ec2, f"kiln-{image_id}-{region}", {COPIED_FROM: image_id}),
            TagSpecifications=[kiln_tags.spec("image", copy_tags),
                               kiln_tags.spec("snapshot", copy_tags)])["ImageId"]
    waits.image_available(aws, copy_id, region=region, who="copy")
    deprecate(aws, copy_id, region)
    if share:
        share_image(aws, copy_id, region, list(share))
    say(f"copy: {image_id} → {copy_id} in {region}" + (" (existing)" if existing else ""))
    return copy_id


def copies_of(ec2, tags: dict[str, str], states: list[str]) -> list[dict]:
    """This account's images carrying `tags` (the copies of one source) in `states`."""
    return all_images(ec2, Owners=["self"], Filters=kiln_tags.filters(tags) + [
        {"Name": "state", "Values": states}])


def client_token(ec2, base: str, tags: dict[str, str]) -> str:
    """CopyImage's idempotency token: the same for a retried request, a new one after a copy
    failed (the same token would hand back the failed image)."""
    failed = copies_of(ec2, tags, ["failed"])
    return f"{base}-{len(failed)}" if failed else base


def deprecate(aws: Aws, image_id: str, region: str | None = None) -> str | None:
    """Set the image's deprecation time kiln.bake.deprecate_after_days from now, if configured."""
    days = aws.settings.bake.deprecate_after_days
    if not days:
        return None
    when = datetime.now(UTC) + timedelta(days=days)
    aws.client("ec2", region).enable_image_deprecation(ImageId=image_id, DeprecateAt=when)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_image(aws: Aws, image_id: str, region: str) -> dict:
    images = aws.client("ec2", region).describe_images(ImageIds=[image_id])["Images"]
    if not images:
        raise KilnError(f"image {image_id} not found in account {aws.account_name}, {region}")
    return images[0]


def snapshot_ids(image: dict) -> list[str]:
    return [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", [])
            if m.get("Ebs", {}).get("SnapshotId")]


def _account_id(aws: Aws, name: str) -> str:
    account_id = str(account_spec(aws.settings, name).id)
    if len(account_id) != 12 or not account_id.isdigit():
        raise KilnError(f"kiln.accounts.{name}.id: {account_id!r} is not a 12-digit account id; "
                        f"Kiln shares only with account ids, never publicly")
    return account_id


def _encryption_key(aws: Aws, image_id: str, region: str, snapshots: list[str]) -> str | None:
    """The one KMS key of the image's snapshots; refuse AWS managed keys."""
    if not snapshots:
        return None
    found = aws.client("ec2", region).describe_snapshots(SnapshotIds=snapshots)["Snapshots"]
    keys = {s["KmsKeyId"] for s in found if s.get("Encrypted") and s.get("KmsKeyId")}
    if not keys:
        return None
    if len(keys) > 1:
        raise KilnError(f"image {image_id} in {region} uses several KMS keys ({', '.join(keys)}): "
                        f"Kiln shares images encrypted with one key")
    key = keys.pop()
    meta = aws.client("kms", region).describe_key(KeyId=key)["KeyMetadata"]
    if meta.get("KeyManager") == "AWS":
        raise KilnError(f"image {image_id} in {region} is encrypted with the AWS managed key "
                        f"alias/aws/ebs ({meta['Arn']}), which cannot be shared with another "
                        f"account: bake with a customer managed key (the build stack's "
                        f"AmiKmsKeyArn)")
    return meta["Arn"]


def _existing_grants(kms, key: str) -> list[dict]:
    return [grant for page in kms.get_paginator("list_grants").paginate(KeyId=key)
            for grant in page["Grants"] if grant.get("Name", "").startswith(GRANT_PREFIX)]


def _grants(aws: Aws, key: str, region: str, account_ids: list[str],
            retire_others: bool = False) -> dict[str, str]:
    """A grant on `key` for each account's root, reusing the ones made before (a grant with
    other operations than GRANT_OPERATIONS, e.g. one made with CreateGrant, is replaced)."""
    kms = aws.client("kms", region)
    existing = {}
    for grant in _existing_grants(kms, key):
        other = grant["Name"].removeprefix(GRANT_PREFIX) not in account_ids
        if sorted(grant.get("Operations", [])) != sorted(GRANT_OPERATIONS) or \
                (retire_others and other):
            kms.retire_grant(KeyId=key, GrantId=grant["GrantId"])
            continue
        existing.setdefault((grant.get("GranteePrincipal"), grant.get("Name")), grant["GrantId"])
    result = {}
    for account_id in account_ids:
        principal, name = f"arn:aws:iam::{account_id}:root", f"{GRANT_PREFIX}{account_id}"
        result[account_id] = existing.get((principal, name)) or kms.create_grant(
            KeyId=key, GranteePrincipal=principal, Operations=GRANT_OPERATIONS,
            Name=name)["GrantId"]
    return result


def retire_for_image(aws: Aws, image_id: str, region: str, account_names: list[str]
                     ) -> list[str]:
    """Retire the grants on the key of this image for accounts not among `account_names`."""
    image = describe_image(aws, image_id, region)
    key = _encryption_key(aws, image_id, region, snapshot_ids(image))
    if not key:
        return []
    keep = sorted({_account_id(aws, name) for name in account_names})
    return retire_unshared(aws, key, region, keep)


def retire_unshared(aws: Aws, key: str, region: str, account_ids: list[str]) -> list[str]:
    """Retire Kiln's grants on `key` for accounts no longer shared with (not in
    `account_ids`); the ids of the accounts whose grant went."""
    kms = aws.client("kms", region)
    gone = []
    for grant in _existing_grants(kms, key):
        account_id = grant["Name"].removeprefix(GRANT_PREFIX)
        if account_id not in account_ids:
            kms.retire_grant(KeyId=key, GrantId=grant["GrantId"])
            gone.append(account_id)
    if gone:
        say(f"share: key {key.split('/')[-1]} ({region}): grants for {', '.join(gone)} retired, "
            f"no longer shared with")
    return gone
