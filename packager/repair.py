"""`invoke repo.verify --repair`: put back a lost, older or refused repodata/repomd.xml from what
can be proven, never from what the bucket merely says.

The first of two ways that applies:

1. Restore. The repository's record (packager/memory.py) holds the sha256 of the last repomd.xml
   Kiln wrote, and the repo bucket keeps versions: the version with exactly those bytes is copied
   back with the signature it was written with, and so is every metadata file it names and every
   package its primary lists that is gone, each from a version whose checksum is the one the
   metadata lists.
2. Rebuild. No version has those bytes (or there is no record: a repository older than it): the
   index is made anew from the package objects under Packages/ whose bytes have the sha256
   recorded with them at upload (packages a prune retired left out), as a new revision signed
   by the repo key.

The plan is printed before anything changes; with --dry-run, only the plan.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from botocore.exceptions import ClientError

from cloud.console import say
from cloud.errors import KilnError
from packager import repodata
from packager.memory import Written
from packager.repo import REPOMD, SIGNATURE_META, Metadata, Repo, sha256_file


@dataclass
class Plan:
    how: str  # "restore" or "rebuild"
    steps: list[str] = field(default_factory=list)
    copies: list[tuple[str, str]] = field(default_factory=list)  # (href, version id)
    written: Written | None = None  # restore: the repomd.xml put back
    signature: bytes | None = None  # restore: the .asc written with it
    packages: list[str] = field(default_factory=list)  # rebuild: the packages indexed


def repair(repo: Repo, tree: Path, problem: str, dry_run: bool) -> dict:
    """Under the repo lease: print the plan, then (unless `dry_run`) carry it out."""
    say(f"repo.verify: {problem}")
    plan = _restore_plan(repo, tree) or _rebuild_plan(repo, tree)
    unchanged = ": nothing is changed (--dry-run)" if dry_run else ""
    say(f"repo.verify: repair plan ({plan.how}){unchanged}:")
    for step in plan.steps:
        say(f"repo.verify:   {step}")
    result = {"repaired": False, "how": plan.how, "plan": plan.steps}
    if dry_run:
        return result
    written = _restore(repo, plan) if plan.how == "restore" else _rebuild(repo, tree, plan)
    repo.ensure_client_files(repo.signer())  # the key and .repo file, should they be gone too
    say(f"repo.verify: repaired {repo.where()}: {written.describe()}")
    return {**result, "repaired": True, "revision": written.revision,
            "packages": written.packages}


# -- restore: the recorded repomd.xml from the bucket's versions -------------------------------


def _restore_plan(repo: Repo, tree: Path) -> Plan | None:
    wanted = {w.sha256: w for w in (repo.state.confirmed, repo.state.pending) if w}
    if not wanted:
        return None
    for version in repo.versions(REPOMD):
        body, metadata = _version(repo, REPOMD, version["VersionId"])
        digest = hashlib.sha256(body).hexdigest()
        if digest in wanted and (metadata.get(SIGNATURE_META) or not repo.pinned):
            break  # (a copy put back without its signature would stay refused)
    else:
        say(f"repo.verify: no version of {repo.where(REPOMD)} has the bytes Kiln recorded: "
            f"rebuilding the index from the package objects")
        return None
    plan = Plan("restore", written=wanted[digest])
    signature = metadata.get(SIGNATURE_META)
    plan.signature = base64.b64decode(signature) if signature else None
    try:
        _restore_files(repo, tree, body, plan)
    except KilnError as error:
        say(f"repo.verify: cannot restore revision {plan.written.revision}: {error}; "
            f"rebuilding the index from the package objects")
        return None
    plan.copies.append((REPOMD, version["VersionId"]))
    plan.steps.append(f"copy back {REPOMD} from its version {version['VersionId']} "
                      f"({plan.written.describe()}), with its signature")
    return plan


def _restore_files(repo: Repo, tree: Path, body: bytes, plan: Plan) -> None:
    """Plan the copies of the metadata files and packages the recorded repomd.xml needs."""
    records = repodata.data_records(body)
    (tree / "repodata").mkdir(parents=True, exist_ok=True)
    present = set(repo.listing("repodata")) | set(repo.listing("Packages"))
    for record in records.values():
        href = record["href"]
        path = repodata.inside(tree, href)
        if href in present:
            repo.fetch(href, path)
            repodata.check_file(path, href, record)
            continue
        version = _find_version(repo, href, lambda v, p=path, h=href, r=record: _matches_file(
            repo, v, p, h, r))
        plan.copies.append((href, version))
        plan.steps.append(f"copy back {href} from its version {version}")
    primary = repodata.inside(tree, records["primary"]["href"])
    for package in repodata.read_primary(primary):
        if package["path"] in present:
            continue
        version = _find_version(repo, package["path"], lambda v, p=package: _head(
            repo, p["path"], v).get("sha256") == p["sha256"])
        plan.copies.append((package["path"], version))
        plan.steps.append(f"copy back {package['path']} from its version {version} "
                          f"(sha256 {package['sha256'][:16]}…, as the metadata lists)")


def _find_version(repo: Repo, href: str, matches) -> str:
    for version in repo.versions(href):
        if matches(version["VersionId"]):
            return version["VersionId"]
    raise KilnError(f"{repo.where(href)} is gone and no version of it has the checksum the "
                    f"metadata lists")


def _matches_file(repo: Repo, version_id: str, path: Path, href: str, record: dict) -> bool:
    path.write_bytes(_version(repo, href, version_id)[0])
    try:
        repodata.check_file(path, href, record)
    except KilnError:
        return False
    return True


def _restore(repo: Repo, plan: Plan) -> Written:
    """Packages and metadata files first, repomd.xml, then its signature."""
    for href, version in plan.copies:
        _copy(repo, href, version)
    if plan.signature is not None:
        repo.put(f"{REPOMD}.asc", plan.signature, "application/pgp-signature")
    if repo.memory:
        repo.memory.confirm(plan.written)
    return plan.written


# -- rebuild: a new index of the package objects that match their recorded digest -------------


def _rebuild_plan(repo: Repo, tree: Path) -> Plan:
    plan = Plan("rebuild")
    (tree / "Packages").mkdir(parents=True, exist_ok=True)
    retired = repo.state.ledger
    for href in sorted(repo.objects("Packages")):
        if not href.endswith(".rpm") or href in retired:
            continue
        recorded = _head(repo, href).get("sha256")
        path = repodata.inside(tree, href)
        repo.download(href, path)
        if recorded and sha256_file(path) == recorded:
            plan.packages.append(href)
            continue
        path.unlink()
        plan.steps.append(f"leave out {href}: its bytes are not the sha256 recorded with it "
                          f"at upload ({(recorded or 'none')[:16]}…)")
    if not plan.packages:
        raise KilnError(f"{repo.where('Packages')}/ holds no package whose bytes match the "
                        f"sha256 recorded at its upload: nothing to rebuild the index from")
    plan.steps.insert(0, f"write a new {REPOMD} (revision {repo.state.revision + 1}) listing "
                         f"the {len(plan.packages)} package object(s) whose bytes match the "
                         f"sha256 recorded at their upload, signed by the repo key")
    return plan


def _rebuild(repo: Repo, tree: Path, plan: Plan) -> Written:
    signer = repo.signer()
    if signer is None and repo.pinned:
        raise KilnError("kiln.repo.gpg_key: rebuilding a signed repository's index needs the "
                        "repo key, to sign it")
    repodata.index(tree, plan.packages)
    current = repo.get(REPOMD)
    old = Metadata(current[0], current[1], {}) if current else None
    return repo.write_metadata(tree, old, signer)


# -- S3 versions ------------------------------------------------------------------------------


def _version(repo: Repo, href: str, version_id: str) -> tuple[bytes, dict]:
    try:
        response = repo.s3.get_object(Bucket=repo.bucket, Key=repo.key(href),
                                      VersionId=version_id)
    except ClientError as error:
        raise repo._error("read a version of", href, error) from None
    return response["Body"].read(), response.get("Metadata", {})


def _head(repo: Repo, href: str, version_id: str | None = None) -> dict:
    extra = {"VersionId": version_id} if version_id else {}
    try:
        return repo.s3.head_object(Bucket=repo.bucket, Key=repo.key(href), **extra
                                   ).get("Metadata", {})
    except ClientError as error:
        raise repo._error("read", href, error) from None


def _copy(repo: Repo, href: str, version_id: str) -> None:
    """The version back as the current object, its metadata (sha256, signature) kept."""
    source = {"Bucket": repo.bucket, "Key": repo.key(href), "VersionId": version_id}
    try:
        repo.s3.copy_object(Bucket=repo.bucket, Key=repo.key(href), CopySource=source)
    except ClientError as error:
        raise repo._error("copy back a version of", href, error) from None
