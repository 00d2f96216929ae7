"""The yum repository on S3: publish signed RPMs, list and prune them, serve a .repo file.

Layout under `s3://<bucket>/<kiln.repo.prefix>/` (default prefix el9/x86_64):

    kiln.repo                      the .repo file a client drops into /etc/yum.repos.d/
    RPM-GPG-KEY-kiln               the public signing key (gpgcheck and repo_gpgcheck)
    Packages/<n>-<v>-<r>.<a>.rpm   the packages, immutable once published
    repodata/repomd.xml(.asc)      the index and its detached signature
    repodata/<sha256>-*.xml.gz     checksum-named metadata, never overwritten

The repository's memory of itself is kept outside the bucket, in the lock table
(packager/memory.py): the revision, digest and package count of the last repomd.xml Kiln wrote,
and the ledger of metadata and packages waiting out their grace period before deletion. A missing
repomd.xml is then a lost index, not an empty repository, and a repomd.xml other than the one
recorded (an older version put back) is refused by every reader; `invoke repo.verify --repair`
puts it back (packager/repair.py).

Publishing is incremental: only repodata/ is downloaded, createrepo_c reads only the new RPM, and
only the new package and the new metadata files are uploaded. Readers are never shown a half
state: the package goes first, then the new metadata files, repomd.xml and its signature last;
files the new repomd.xml no longer names are deleted only on a later run, once they have been
unreferenced for `kiln.repo.metadata_grace_seconds`. A lease in the lock table serializes the
read-modify-write of repodata/, and repomd.xml is written with If-Match on the ETag that was read.
A publish killed between its upload and its repomd.xml leaves a package object no metadata lists;
`invoke janitor` removes it once older than `kiln.repo.unlisted_grace_seconds`, under the lease
(a publish that finds its upload gone at that point puts it back).

Signing: publish signs a copy of the RPM, never the file in dist/ (the packager's builds stay
reproducible). The repo's `sha256` of a package is that of the signed file dnf downloads; the
object also records `source-sha256`, the digest of the file that was published, which is what
immutability compares: the same file again is "unchanged", other bytes under the same
name-version-release are refused.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from cloud import locks, stacks
from cloud.aws import Aws
from cloud.console import say
from cloud.errors import KilnError
from packager import repodata, signing
from packager.memory import Memory, State, Written
from packager.signing import Signer

KEY_FILE = "RPM-GPG-KEY-kiln"
REPO_FILE = "kiln.repo"
REPOMD = "repodata/repomd.xml"
# The only folders whose files retire (and the ledger) may delete.
RETIRABLE = ("repodata/", "Packages/")
# Temporary folders: kiln-<kind>-<pid>-<random>.
WORKDIR = re.compile(r"kiln-(?:publish|repo|verify|prune|rpmdb)-(\d+)-\w+")
# repomd.xml's object metadata: the base64 of the detached signature written with it.
SIGNATURE_META = "kiln-signature"
CHUNK = 1024 * 1024
# Above this size a package goes up in parts, read one part at a time (bounded memory).
MULTIPART_THRESHOLD = 64 * 1024 * 1024
PART_SIZE = 16 * 1024 * 1024
TRANSFER = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=PART_SIZE,
                          max_concurrency=4)


@dataclass(frozen=True)
class RpmInfo:
    name: str
    epoch: str
    version: str
    release: str
    arch: str
    vcs: str = "(none)"
    disttag: str = "(none)"

    @property
    def provenance(self) -> dict[str, str]:
        """What Kiln's packager recorded in the header: the app's commit and manifest digest.

        Kept as object metadata, so a bake can tell "same inputs" without downloading the RPM.
        """
        found = {"commit": _after(self.vcs, "git:"),
                 "manifest-digest": _after(self.disttag, "kiln-manifest-sha256:")}
        return {key: value for key, value in found.items() if value}

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}.rpm"

    @property
    def nevra(self) -> str:
        epoch = "" if self.epoch in ("", "0") else f"{self.epoch}:"
        return f"{self.name}-{epoch}{self.version}-{self.release}.{self.arch}"


@dataclass
class Metadata:
    """The repodata/ that was read: repomd.xml's bytes and ETag, and its data files."""

    repomd: bytes
    etag: str
    files: dict[str, str]
    signature: bytes | None = None  # the .asc written with it, kept in its object metadata
    revision: int = 0  # its <revision>, as Kiln recorded it


class IndexRefused(KilnError):
    """repodata/repomd.xml is missing, older than the last one Kiln wrote, not the one it
    wrote, or not signed by the pinned key: `invoke repo.verify --repair` can put it back."""


# -- the repository -----------------------------------------------------------------------------


class Repo:
    def __init__(self, aws: Aws, bucket: str, prefix: str):
        self.aws = aws
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.s3 = aws.client("s3")

    @classmethod
    def of(cls, aws: Aws) -> Repo:
        bucket = aws.settings.repo.bucket or stacks.output(aws, "build", "RepoBucket")
        return cls(aws, bucket, aws.settings.repo.prefix)

    def key(self, href: str) -> str:
        return f"{self.prefix}/{href}" if self.prefix else href

    def where(self, href: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(href)}"

    # -- objects -----------------------------------------------------------------------------
    def head(self, href: str) -> dict | None:
        try:
            return self.s3.head_object(Bucket=self.bucket, Key=self.key(href))
        except ClientError as error:
            if _status(error) == 404:
                return None
            raise self._error("read", href, error) from None

    def get(self, href: str) -> tuple[bytes, str] | None:
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=self.key(href))
        except ClientError as error:
            if _status(error) == 404 or _code(error) == "NoSuchKey":
                return None
            raise self._error("read", href, error) from None
        return response["Body"].read(), response["ETag"]

    def fetch(self, href: str, target: Path) -> None:
        """A small object to a file, streamed (metadata files)."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.key(href))["Body"]
        except ClientError as error:
            raise self._error("read", href, error) from None
        with open(target, "wb") as handle:
            for chunk in body.iter_chunks(CHUNK):
                handle.write(chunk)

    def download(self, href: str, target: Path) -> None:
        try:
            self.s3.download_file(self.bucket, self.key(href), str(target), Config=TRANSFER)
        except ClientError as error:
            raise self._error("download", href, error) from None

    def put(self, href: str, body: bytes, content_type: str, **conditions) -> None:
        """Write an object; `Metadata` and S3's conditions (IfMatch, IfNoneMatch) pass on."""
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self.key(href), Body=body,
                               ContentType=content_type, CacheControl="no-cache", **conditions)
        except ClientError as error:
            raise self._error("write", href, error) from None

    def delete(self, hrefs: list[str]) -> None:
        for start in range(0, len(hrefs), 1000):
            batch = [{"Key": self.key(h)} for h in hrefs[start:start + 1000]]
            try:
                self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch,
                                                                   "Quiet": True})
            except ClientError as error:
                raise self._error("delete", hrefs[start], error) from None

    def listing(self, folder: str) -> list[str]:
        return list(self.objects(folder))

    def objects(self, folder: str) -> dict[str, datetime]:
        """The objects under `folder`: href → when it was written."""
        found, base = {}, f"{self.key(folder)}/"
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base)
        try:
            for page in pages:
                found.update({f"{folder}/{o['Key'][len(base):]}": o["LastModified"]
                              for o in page.get("Contents", [])})
        except ClientError as error:
            raise self._error("list", folder, error) from None
        return found

    def _error(self, verb: str, href: str, error: ClientError) -> KilnError:
        if _code(error) == "NoSuchBucket":
            return KilnError(f"repo bucket {self.bucket} does not exist (kiln.repo.bucket or the "
                             f"build stack's RepoBucket output): run `invoke bootstrap`")
        return KilnError(f"cannot {verb} {self.where(href)}: {_code(error)} "
                         f"{error.response.get('Error', {}).get('Message', '')}".rstrip())

    # -- the lease ---------------------------------------------------------------------------
    @contextmanager
    def lease(self):
        settings = self.aws.settings
        table = settings.repo.lock_table or stacks.output(self.aws, "build", "LockTableName")
        with locks.lease(self.aws, table, f"repo/{self.bucket}/{self.prefix}",
                         locks.owner_description(), wait_seconds=settings.repo.lock_timeout):
            yield

    # -- metadata ----------------------------------------------------------------------------
    def fetch_metadata(self, tree: Path, types: tuple[str, ...] | None = None) -> Metadata | None:
        """Download repodata/ (repomd.xml and its data files) into `tree`; None when empty.

        Nothing is written before repomd.xml's signature by the pinned key is checked; each
        data file must be `repodata/<file>` and match the checksum repomd.xml lists."""
        state = self.remembered()
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=self.key(REPOMD))
        except ClientError as error:
            if _status(error) == 404 or _code(error) == "NoSuchKey":
                self._check_empty(state)
                return None
            raise self._error("read", REPOMD, error) from None
        body, etag = response["Body"].read(), response["ETag"]
        signature = response.get("Metadata", {}).get(SIGNATURE_META)
        attached = base64.b64decode(signature) if signature else None
        self._verify(body, attached)
        revision = self._accepted(body, state)
        records = repodata.data_records(body)
        (tree / "repodata").mkdir(parents=True, exist_ok=True)
        (tree / REPOMD).write_bytes(body)
        wanted = [kind for kind in records if types is None or kind in types]

        def fetch(kind: str) -> None:
            href = records[kind]["href"]
            path = repodata.inside(tree, href)
            self.fetch(href, path)
            repodata.check_file(path, href, records[kind])

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(fetch, wanted))
        return Metadata(body, etag, {kind: r["href"] for kind, r in records.items()}, attached,
                        revision)

    # -- the repository's memory of itself (packager/memory.py) ------------------------------
    @property
    def memory(self) -> Memory | None:
        """Where the repository's record is kept (None before `invoke bootstrap` made the lock
        table, when only a configured bucket exists: nothing to check against)."""
        if not hasattr(self, "_memory"):
            table = locks.build_table(self.aws)
            self._memory = Memory(self.aws, table, self.bucket, self.prefix) if table else None
        return self._memory

    def remembered(self) -> State:
        """The record, read now (consistently) and kept for this operation's write."""
        self.state = self.memory.read() if self.memory else State()
        return self.state

    def _check_empty(self, state: State) -> None:
        """No repomd.xml: an empty repository only if Kiln never wrote an index here (no record
        of one, no earlier version of it in the bucket)."""
        if state.known:
            last = f"Kiln last wrote {state.confirmed.describe()} ({self.memory.where()})"
        elif self.versions(REPOMD):
            last = "the bucket keeps earlier versions of it"
        else:
            return
        raise IndexRefused(f"{self.where(REPOMD)} is missing, but {last}: the index was lost, "
                           f"the repository is not empty; nothing was written: "
                           f"`invoke repo.verify --repair` puts it back")

    def _accepted(self, body: bytes, state: State) -> int:
        """The revision of this (signed) repomd.xml, refused unless it is one Kiln recorded."""
        number = repodata.revision(body)
        last = state.confirmed
        if last is None:  # nothing recorded yet (a repository older than its record)
            return number or 0
        found = state.match(hashlib.sha256(body).hexdigest())
        if found:
            return found.revision
        if number is not None and number < last.revision:
            problem = (f"is revision {number}, older than revision {last.revision} that Kiln "
                       f"last wrote (an older version put back?)")
        else:
            problem = (f"(revision {number}) is not the one Kiln last wrote ({last.describe()})")
        raise IndexRefused(f"{self.where(REPOMD)} {problem}: refusing it, nothing was written; "
                           f"`invoke repo.verify --repair` puts back revision {last.revision}")

    def record(self, meta: Metadata, packages: int) -> None:
        """Record a verified repomd.xml that the record does not know yet (a repository older
        than its record, or a write whose confirmation was lost)."""
        digest = hashlib.sha256(meta.repomd).hexdigest()
        found = self.state.match(digest)
        if found and found.packages != packages:
            raise IndexRefused(f"{self.where(meta.files['primary'])} lists {packages} "
                               f"package(s), but Kiln recorded {found.describe()}")
        if self.memory and (found is None or found != self.state.confirmed):
            self.memory.confirm(Written(meta.revision, digest, packages))

    def versions(self, href: str) -> list[dict]:
        """The bucket's versions of one object, newest first (delete markers left out)."""
        key, found = self.key(href), []
        pages = self.s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket,
                                                                        Prefix=key)
        try:
            for page in pages:
                found += [v for v in page.get("Versions", []) if v["Key"] == key]
        except ClientError as error:
            raise self._error("list the versions of", href, error) from None
        return sorted(found, key=lambda v: v["LastModified"], reverse=True)

    def _verify(self, body: bytes, attached: bytes | None) -> None:
        """repomd.xml must carry a good signature by the pinned key: the one written with it (in
        its object metadata) or repomd.xml.asc. The bucket's key is never trusted by itself."""
        if self.pinned is None:
            return
        problem, asc = "missing", self.get(f"{REPOMD}.asc")
        for signature in [s for s in (attached, asc[0] if asc else None) if s]:
            problem = signing.verify_detached(body, signature, self._public_key(), self.pinned)
            if problem is None:
                return
        raise IndexRefused(f"{REPOMD}.asc: {problem} (repository {self.where()}); the metadata "
                        f"was changed without the signing key: refusing it, nothing was written")

    @property
    def pinned(self) -> str | None:
        """The fingerprint the metadata must be signed by (None: an unsigned repository)."""
        if not hasattr(self, "_pinned"):
            self._pinned = signing.pinned_fingerprint(self.aws.settings, *self._recorded_key())
        return self._pinned

    def signer(self) -> Signer | None:
        """The configured signer, which must hold the pinned key: metadata signed by any other
        would be refused by every reader."""
        signer = signing.from_settings(self.aws.settings)
        if signer and self.pinned and signer.fingerprint() != self.pinned:
            raise KilnError(f"kiln.repo.gpg_key: {signer.key} is key {signer.fingerprint()}, "
                            f"but the repository is pinned to {self.pinned}; sign with that "
                            f"key, or run `invoke bootstrap` to record the new one")
        return signer

    def _recorded_key(self) -> tuple[str | None, str]:
        """The fingerprint `invoke bootstrap` recorded in the build stack, and where."""
        where = f"stack {stacks.stack_name(self.aws.settings, 'build')} in account " \
                f"{self.aws.account_name}"
        try:
            return stacks.outputs(self.aws, "build").get("RepoKeyFingerprint"), where
        except KilnError:  # no build stack (a configured bucket): nothing recorded
            return None, where

    def _public_key(self) -> bytes:
        """The pinned key from the local GnuPG home, else as the bucket serves it (the
        signature check still demands the pinned fingerprint)."""
        local = signing.public_key(self.aws.settings, self.pinned)
        if local:
            return local
        served = self.get(KEY_FILE)
        return served[0] if served else b""

    def write_metadata(self, tree: Path, old: Metadata | None, signer: Signer | None) -> Written:
        """Upload the new data files, then repomd.xml (If-Match the one read), then its .asc;
        the repository's record names the new repomd.xml before it is written, and confirms it
        once it (and its signature) landed."""
        written = self._next_revision(tree, old)
        body = (tree / REPOMD).read_bytes()
        new_files = repodata.data_files(body)
        old_files = set(old.files.values()) if old else set()
        added = [href for href in new_files.values() if href not in old_files]
        with ThreadPoolExecutor(max_workers=4) as pool:  # gpg signs while the files go up
            signed = pool.submit(signer.sign_detached, tree / REPOMD) if signer else None
            staged = pool.submit(self.memory.stage, written) if self.memory else None
            list(pool.map(lambda href: self.put(href, (tree / href).read_bytes(),
                                                _content_type(href)), added))
            signature = signed.result().read_bytes() if signed else None
            if staged:
                staged.result()
        condition = {"IfMatch": old.etag} if old else {"IfNoneMatch": "*"}
        if signature is not None:  # so a run stopped before the .asc PUT can put it back
            condition["Metadata"] = {SIGNATURE_META: base64.b64encode(signature).decode()}
        try:
            self.put(REPOMD, body, "application/xml", **condition)
        except KilnError as error:
            if "PreconditionFailed" not in str(error):
                raise
            # A retried PUT whose first attempt landed (its response lost) fails its
            # condition too: what is there tells "my own write" from someone else's.
            if (self.get(REPOMD) or (b"", ""))[0] != body:
                raise KilnError(f"{self.where(REPOMD)} changed while Kiln held the repo lock "
                                f"(a lease that expired?); nothing was changed: run it again"
                                ) from None
            say(f"publish: the answer to the {REPOMD} write was lost; it landed, going on")
        try:
            if signature is not None:
                self.put(f"{REPOMD}.asc", signature, "application/pgp-signature")
        except KilnError:
            self._restore(old)
            raise
        if self.memory:
            self.memory.confirm(written)
        return written

    def _next_revision(self, tree: Path, old: Metadata | None) -> Written:
        """Set the next revision in tree/repodata/repomd.xml (one above any Kiln recorded or
        read): what the record will name."""
        state = getattr(self, "state", None) or self.remembered()
        number = max(old.revision if old else 0, state.revision) + 1
        path = tree / REPOMD
        body = repodata.with_revision(path.read_bytes(), number)
        path.write_bytes(body)
        primary = tree / repodata.data_files(body)["primary"]
        return Written(number, hashlib.sha256(body).hexdigest(), repodata.package_count(primary))

    def _restore(self, old: Metadata | None) -> None:
        """Put back the repomd.xml that was read, so index and signature match again."""
        if old is None:
            self.delete([REPOMD])
        elif old.signature is None:
            self.put(REPOMD, old.repomd, "application/xml")
        else:
            self.put(REPOMD, old.repomd, "application/xml", Metadata={
                SIGNATURE_META: base64.b64encode(old.signature).decode()})

    def ensure_signature(self, meta: Metadata | None, signer: Signer | None,
                         repair: bool = True) -> bool:
        """Make repomd.xml.asc the signature of the repomd.xml that is there; True if it had to
        be put back. A run stopped between the two PUTs left the old one: the signature made with
        the new repomd.xml is in its object metadata. Only a signature that verifies with the
        repo key is ever put back; nothing is signed anew, so a repomd.xml Kiln did not write
        stays refused by dnf."""
        if signer is None or meta is None:
            return False
        current = (self.get(f"{REPOMD}.asc") or (None, ""))[0]
        if current is not None and current == meta.signature:
            return False
        if meta.signature and signer.verifies(meta.repomd, meta.signature):
            if not repair:
                raise KilnError(f"{self.where(REPOMD)}.asc does not match {REPOMD} (a run "
                                f"stopped between the two): `invoke repo.verify` puts it back")
            self.put(f"{REPOMD}.asc", meta.signature, "application/pgp-signature")
            say(f"repo: {REPOMD}.asc did not match {REPOMD} (a run stopped between the two); "
                f"put back the signature written with it")
            return True
        if current is not None and signer.verifies(meta.repomd, current):
            return False
        raise KilnError(f"{self.where(REPOMD)} does not match {REPOMD}.asc and carries no "
                        f"signature made with the repo key (kiln.repo.gpg_key): it was not "
                        f"written by Kiln; put back a signed version (the bucket keeps versions)")

    # -- retiring superseded files ----------------------------------------------------------
    def retire_snapshot(self) -> tuple[dict, list[str]]:
        """The ledger (kept in the repository's record, where a bucket writer cannot add to it)
        and the repodata/ listing that `retire` works from (read under the lease, before or
        after the new metadata went up: new files are live either way)."""
        state = getattr(self, "state", None) or self.remembered()  # as read under this lease
        return dict(state.ledger), self.listing("repodata")

    def retire(self, tree: Path, extra: list[str] = (),
               snapshot: tuple[dict, list[str]] | None = None) -> list[str]:
        """Record the repodata files the metadata in `tree` no longer names (and `extra` hrefs)
        in the ledger; delete those recorded more than the grace period ago. Never deleted:
        what the current metadata names or lists, the repo's key and .repo file, anything
        outside repodata/ and Packages/. Returns the hrefs deleted now."""
        ledger, listed = snapshot or self.retire_snapshot()
        before = dict(ledger)
        now = int(time.time())
        live = repodata.data_files((tree / REPOMD).read_bytes())
        keep = set(live.values()) | {REPOMD, f"{REPOMD}.asc", KEY_FILE, REPO_FILE}
        for href in [*listed, *extra]:
            ledger.setdefault(href, now)
        for href in [h for h in ledger if h in keep or not h.startswith(RETIRABLE)]:
            del ledger[href]
        grace = self.aws.settings.repo.metadata_grace_seconds
        due = sorted(h for h, since in ledger.items() if now - since >= grace)
        for href in repodata.listed(tree / live["primary"],
                                    [h for h in due if h.startswith("Packages/")]):
            del ledger[href]  # listed again (published anew since it was pruned)
        due = [h for h in due if h in ledger]
        if due:
            self.delete(due)
            for href in due:
                del ledger[href]
        if ledger != before and self.memory:
            self.memory.save_ledger(ledger)
        return due

    # -- package objects no metadata lists --------------------------------------------------
    def unlisted_packages(self) -> dict[str, float]:
        """Package objects that no metadata lists and no prune retired, with their age in
        seconds: the uploads of publishes killed before their repomd.xml (or still at work)."""
        with workdir("repo") as tmp:
            meta = self.fetch_metadata(Path(tmp), types=("primary",))
            listed = {p["path"] for p in repodata.read_primary(
                Path(tmp) / meta.files["primary"])} if meta else set()
        retired = self.state.ledger  # deleted after their grace
        now = datetime.now(UTC)
        return {href: (now - written).total_seconds()
                for href, written in self.objects("Packages").items()
                if href not in listed and href not in retired}

    def sweep_unlisted(self, hrefs: list[str]) -> list[str]:
        """Delete those of `hrefs` that are still unlisted and older than
        kiln.repo.unlisted_grace_seconds, under the repo lease (a publish lists its upload while
        it holds it); returns the hrefs deleted."""
        grace = self.aws.settings.repo.unlisted_grace_seconds
        with self.lease():
            old = {h for h, age in self.unlisted_packages().items() if age >= grace}
            gone = [href for href in hrefs if href in old]
            self.delete(gone)
        return gone

    # -- what clients read -----------------------------------------------------------------
    def ensure_client_files(self, signer: Signer | None) -> None:
        """Serve kiln.repo and the public key; written only when they differ."""
        wanted = {REPO_FILE: (repo_file(self.aws, self.bucket, self.prefix, signer is not None),
                              "text/plain")}
        if signer:
            wanted[KEY_FILE] = (signer.public_key(), "application/pgp-keys")
        for href, (body, content_type) in wanted.items():
            current = self.get(href)
            if current is None or current[0] != body:
                self.put(href, body, content_type)


# -- URLs ---------------------------------------------------------------------------------------


def bucket_url(aws: Aws, bucket: str) -> str:
    """The bucket's HTTP URL: virtual-hosted on AWS, path-style on any other endpoint."""
    s3 = aws.client("s3")
    endpoint = s3.meta.endpoint_url.rstrip("/")
    host = urlsplit(endpoint).hostname or ""
    if host.endswith(".amazonaws.com") or host == "amazonaws.com":
        return f"https://{bucket}.s3.{s3.meta.region_name}.amazonaws.com"
    return f"{endpoint}/{bucket}"


def baseurl(aws: Aws) -> str:
    """The URL dnf uses as the repository's baseurl."""
    repo = Repo.of(aws)
    return f"{bucket_url(aws, repo.bucket)}/{repo.prefix}".rstrip("/")


def gpgkey_url(aws: Aws) -> str:
    return f"{baseurl(aws)}/{KEY_FILE}"


def repo_file_url(aws: Aws) -> str:
    return f"{baseurl(aws)}/{REPO_FILE}"


def repo_file(aws: Aws, bucket: str, prefix: str, signed: bool) -> bytes:
    url = f"{bucket_url(aws, bucket)}/{prefix}".rstrip("/")
    check = "1" if signed else "0"
    lines = ["[kiln]", "name=Kiln packages", f"baseurl={url}", "enabled=1",
             f"gpgcheck={check}", f"repo_gpgcheck={check}"]
    if signed:
        lines.append(f"gpgkey={url}/{KEY_FILE}")
    lines.append("metadata_expire=60")
    return ("\n".join(lines) + "\n").encode()


# -- publish -----------------------------------------------------------------------------------


def publish(aws: Aws, rpm_path: str | Path) -> dict:
    """Put one RPM into the repository and update the metadata; see the module docstring.

    Independent steps overlap: the signed copy is made, described by createrepo_c and uploaded
    while the lease is taken and repodata/ is read; the metadata is written only once the
    package object exists."""
    rpm_path = Path(rpm_path)
    repo = Repo.of(aws)
    signer = repo.signer()
    with workdir("publish") as tmp, \
            ThreadPoolExecutor(max_workers=4) as background:
        incoming = Path(tmp) / "incoming.rpm"
        signed = background.submit(_sign_copy, rpm_path, incoming, signer)
        info = rpm_info(rpm_path)  # while the copy is signed
        href = f"Packages/{info.filename}"
        tree = Path(tmp) / "repo"
        (tree / "Packages").mkdir(parents=True)
        client_files = background.submit(repo.ensure_client_files, signer)
        described = background.submit(_describe, signed, incoming, tree, href)
        def place() -> tuple[str, bool]:
            return _place_package(repo, incoming, href, *signed.result(), info.provenance)

        steps = Steps(background, signed, described, background.submit(place), place)
        placed = steps.placed
        try:
            with repo.lease():
                sha256, status = _add_to_metadata(repo, tree, href, steps, signer)
        except BaseException:
            if _created(placed):  # leave the repository as it was
                repo.delete([href])
            raise
        client_files.result()
    say(f"publish: {info.nevra} {status} in {repo.where()}")
    return {"name": info.name, "epoch": info.epoch, "version": info.version,
            "release": info.release, "arch": info.arch, "nevra": info.nevra, "path": href,
            "url": f"{bucket_url(aws, repo.bucket)}/{repo.key(href)}",
            "source_sha256": signed.result()[0], "sha256": sha256, "status": status,
            "commit": info.provenance.get("commit"),
            "manifest_digest": info.provenance.get("manifest-digest")}


@dataclass
class Steps:
    """What publish runs in the background while it takes the lease and reads repodata/."""

    pool: ThreadPoolExecutor
    signed: Future  # (source sha256, signed sha256) from _sign_copy
    described: Future  # the new package's own metadata (repodata.describe)
    placed: Future  # (published sha256, created) from _place_package
    place: Callable[[], tuple[str, bool]]  # _place_package again


def _sign_copy(rpm_path: Path, staged: Path, signer: Signer | None) -> tuple[str, str]:
    """Copy the RPM to `staged`, hashing what is read, and sign the copy: (the source's
    sha256, the signed copy's sha256)."""
    digest = hashlib.sha256()
    with open(rpm_path, "rb") as source, open(staged, "wb") as target:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            target.write(chunk)
    if not signer:
        return digest.hexdigest(), digest.hexdigest()
    signer.sign_rpm(staged)
    return digest.hexdigest(), sha256_file(staged)


def _describe(signed: Future, staged: Path, tree: Path, href: str) -> Path:
    """The signed copy's own metadata (repodata.describe), once it is signed."""
    signed.result()  # raises what signing raised
    os.link(staged, tree / href)
    return repodata.describe(tree, href)


def _place_package(repo: Repo, staged: Path, href: str, source_sha256: str,
                   sha256: str, provenance: dict[str, str]) -> tuple[str, bool]:
    """Create the object unless it exists; (published sha256, created)."""
    if _put_package(repo, staged, href, sha256, source_sha256, provenance):
        return sha256, True
    # Published before (or by a concurrent publish): judge and use that object.
    existing = repo.head(href) or {}
    published = existing.get("Metadata", {})
    if source_sha256 not in (published.get("source-sha256"), published.get("sha256")):
        raise KilnError(_immutable(repo, href, published.get("source-sha256", "unknown")))
    return published.get("sha256", source_sha256), False


def _created(placed: Future) -> bool:
    try:
        return placed.result()[1]
    except BaseException:  # noqa: BLE001 - nothing was created
        return False


def _put_package(repo: Repo, path: Path, href: str, sha256: str, source_sha256: str,
                 provenance: dict[str, str]) -> bool:
    """Create the object only if absent (If-None-Match); False if it exists already."""
    params = {"Bucket": repo.bucket, "Key": repo.key(href), "ContentType": "application/x-rpm",
              "Metadata": {"sha256": sha256, "source-sha256": source_sha256, **provenance}}
    try:
        if path.stat().st_size <= MULTIPART_THRESHOLD:
            with open(path, "rb") as body:
                repo.s3.put_object(**params, Body=body, IfNoneMatch="*",
                                   ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode())
        else:
            _put_multipart(repo, path, params)
    except ClientError as error:
        if _status(error) == 412 or _code(error) == "PreconditionFailed":
            return False
        raise repo._error("upload", href, error) from None
    return True


def _put_multipart(repo: Repo, path: Path, params: dict) -> None:
    """A multipart upload, one part in memory at a time, completed with If-None-Match."""
    where = {"Bucket": params["Bucket"], "Key": params["Key"]}
    upload_id = repo.s3.create_multipart_upload(**params)["UploadId"]
    try:
        parts = []
        with open(path, "rb") as handle:
            while chunk := handle.read(PART_SIZE):
                number = len(parts) + 1
                etag = repo.s3.upload_part(**where, UploadId=upload_id, PartNumber=number,
                                           Body=chunk)["ETag"]
                parts.append({"ETag": etag, "PartNumber": number})
                del chunk
        repo.s3.complete_multipart_upload(**where, UploadId=upload_id, IfNoneMatch="*",
                                          MultipartUpload={"Parts": parts})
    except BaseException:
        repo.s3.abort_multipart_upload(**where, UploadId=upload_id)
        raise


def _add_to_metadata(repo: Repo, tree: Path, href: str, steps: Steps,
                     signer: Signer | None) -> tuple[str, str]:
    """Under the lease: (published sha256, "published" or "unchanged")."""
    old = repo.fetch_metadata(tree)
    repo.ensure_signature(old, signer)
    if old is not None:
        listed = repodata.published_sha256(tree / old.files["primary"], href)
        if listed is not None:
            sha256 = steps.placed.result()[0]
            if listed == sha256:
                return sha256, "unchanged"
            raise KilnError(_immutable(repo, href, listed))
    snapshot = steps.pool.submit(repo.retire_snapshot)  # while the metadata is made
    alone = steps.described.result()
    sha256, created = steps.placed.result()
    if repo.head(href) is None:
        # Swept by `invoke janitor` (unlisted and old) before this publish had the lease.
        sha256, created = steps.place()
    if not created and sha256 != steps.signed.result()[1]:
        # Uploaded by an earlier, interrupted publish (signed then): describe those bytes.
        repo.download(href, tree / href)
        alone = repodata.describe(tree, href)
    if old is None or not repodata.append(tree, alone, old.repomd):
        repodata.add_packages(tree, [href])
    repo.write_metadata(tree, old, signer)
    repo.retire(tree, snapshot=snapshot.result())
    return sha256, "published"


def _immutable(repo: Repo, href: str, other: str) -> str:
    return (f"{repo.where(href)} is already published with other content (sha256 {other}); "
            f"versions are immutable: publish it under a new version or iteration")


# -- list, find, prune -------------------------------------------------------------------------


def list_packages(aws: Aws, app: str | None = None) -> list[dict]:
    """Every published package (from primary.xml), oldest version first within each name."""
    repo = Repo.of(aws)
    with workdir("repo") as tmp:
        meta = repo.fetch_metadata(Path(tmp), types=("primary",))
        if meta is None:
            return []
        packages = repodata.read_primary(Path(tmp) / meta.files["primary"])
    if app:
        packages = [p for p in packages if p["name"] == app]
    return sort_packages(packages)


def find_package(aws: Aws, name: str, rpm_version: str, release: str) -> dict | None:
    for package in list_packages(aws, name):
        if (package["version"], package["release"]) == (rpm_version, release):
            return package
    return None


def verify(aws: Aws, dry_run: bool = False, repair: bool = False) -> dict:
    """Check the repository as dnf reads it: repomd.xml the one Kiln last wrote, signed by the
    repo key, every metadata file it names and every package its primary.xml lists present. A
    signature left unmatched by a stopped run is put back (unless `dry_run`); any other fault
    fails in one line, unless `repair`: then a lost, older or refused repomd.xml is put back
    from what can be proven (packager/repair.py), its plan printed first (only that, with
    `dry_run`)."""
    repo = Repo.of(aws)
    signer = signing.from_settings(aws.settings)
    with workdir("verify") as tmp:
        tree = Path(tmp) / "repo"
        with repo.lease():
            try:
                meta = repo.fetch_metadata(tree, types=())
            except IndexRefused as error:
                if not repair:
                    raise
                from packager import repair as repairing

                return repairing.repair(repo, tree, str(error), dry_run)
            if meta is None:
                say(f"repo.verify: {repo.where()} is empty: no package was ever published")
                return {"packages": 0, "signed": False, "repaired": False}
            repaired = bool(signer) and repo.ensure_signature(meta, signer, repair=not dry_run)
            if signer:
                _check_signature(repo, meta, signer)
            present = set(repo.listing("repodata")) | set(repo.listing("Packages"))
            _require(repo, [h for h in meta.files.values() if h not in present], REPOMD)
            repo.fetch(meta.files["primary"], tree / meta.files["primary"])
            packages = repodata.read_primary(tree / meta.files["primary"])
            _require(repo, [p["path"] for p in packages if p["path"] not in present],
                     meta.files["primary"])
            if not dry_run:
                repo.record(meta, len(packages))
    state = "signed" if signer else "unsigned"
    say(f"repo.verify: {repo.where()} is consistent: {len(packages)} package(s), {state}"
        f"{', its signature put back' if repaired else ''}")
    return {"packages": len(packages), "signed": bool(signer), "repaired": repaired}


def _check_signature(repo: Repo, meta: Metadata, signer: Signer) -> None:
    current = repo.get(f"{REPOMD}.asc")
    if current is None or not signer.verifies(meta.repomd, current[0]):
        raise KilnError(f"{repo.where(REPOMD)}.asc is not a signature of {REPOMD} by the repo "
                        f"key (kiln.repo.gpg_key)")


def _require(repo: Repo, missing: list[str], named_by: str) -> None:
    if missing:
        raise KilnError(f"{repo.where(missing[0])} is named by {named_by} but missing"
                        f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}")


def prune(aws: Aws, keep: int, dry_run: bool = False) -> dict:
    """Keep the newest `keep` versions of each package name; the metadata is updated first, the
    removed packages are deleted once unreferenced for the grace period (now, if it is 0)."""
    if keep < 1:
        raise KilnError(f"--keep must be at least 1, got {keep}")
    repo = Repo.of(aws)
    signer = None if dry_run else signing.from_settings(aws.settings)
    with workdir("prune") as tmp:
        tree = Path(tmp) / "repo"
        with repo.lease():
            old = repo.fetch_metadata(tree)
            if not dry_run:
                repo.ensure_signature(old, signer)
            packages = repodata.read_primary(tree / old.files["primary"]) if old else []
            remove = _prune_plan(packages, keep)
            plan = {"keep": keep, "dry_run": dry_run, "remove": remove,
                    "kept": len(packages) - len(remove), "deleted": []}
            if dry_run or not remove:
                return plan
            gone = {p["path"] for p in remove}
            repodata.keep_packages(tree, [p["path"] for p in packages if p["path"] not in gone])
            repo.write_metadata(tree, old, signer)
            plan["deleted"] = repo.retire(tree, sorted(gone))
    return plan


def _prune_plan(packages: list[dict], keep: int) -> list[dict]:
    by_name: dict[str, list[dict]] = {}
    for package in sort_packages(packages):
        by_name.setdefault(package["name"], []).append(package)
    return [p for versions in by_name.values() for p in versions[:-keep]]


def sort_packages(packages: list[dict]) -> list[dict]:
    """By name, then by rpm's own version ordering (1.0~rc1 < 1.0 < 1.10), then arch."""
    if not packages:
        return []
    order = rpm_order([(p["epoch"], p["version"], p["release"]) for p in packages])
    rank = {i: position for position, i in enumerate(order)}
    indexed = sorted(range(len(packages)),
                     key=lambda i: (packages[i]["name"], rank[i], packages[i]["arch"]))
    return [packages[i] for i in indexed]


def rpm_order(evrs: list[tuple[str, str, str]]) -> list[int]:
    """Indices of `evrs` in ascending order, compared by rpm itself (rpm.vercmp in its Lua)."""
    for evr in evrs:
        for part in evr:
            if not re.fullmatch(r"[A-Za-z0-9._+~^]*", part or ""):
                raise KilnError(f"repodata lists an invalid version part {part!r}")
    table = ",".join(f'{{{i},"{e or 0}","{v}","{r}"}}' for i, (e, v, r) in enumerate(evrs))
    script = (
        "%{lua: local t={" + table + "}\n"
        "local function cmp(a,b) for k=2,4 do local c=rpm.vercmp(a[k],b[k]) "
        "if c~=0 then return c<0 end end return false end\n"
        "table.sort(t,cmp) local o={} for _,x in ipairs(t) do o[#o+1]=x[1] end "
        "print(table.concat(o,' '))}")
    result = subprocess.run(["rpm", "--eval", script], capture_output=True, text=True)
    if result.returncode != 0:
        raise KilnError(f"rpm could not compare versions: {result.stderr.strip()}")
    return [int(i) for i in result.stdout.split()]


# -- helpers -----------------------------------------------------------------------------------


def workdir(kind: str) -> tempfile.TemporaryDirectory:
    """A temporary folder named after this process; those of killed runs (a kill -9 skips their
    removal) are removed first, once their process is gone."""
    for folder in Path(tempfile.gettempdir()).glob("kiln-*-*-*"):
        match = WORKDIR.fullmatch(folder.name)
        if match and int(match[1]) != os.getpid() and not locks.process_start(int(match[1])):
            shutil.rmtree(folder, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"kiln-{kind}-{os.getpid()}-")


def rpm_info(path: Path) -> RpmInfo:
    if not path.is_file():
        raise KilnError(f"{path}: no such RPM file")
    with workdir("rpmdb") as dbpath:
        result = subprocess.run(
            ["rpm", "--dbpath", dbpath, "-qp", "--nosignature", "--nodigest", "--qf",
             "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\t%{SOURCERPM}"
             "\\t%{VCS}\\t%{DISTTAG}",
             str(path)], capture_output=True, text=True)
    fields = result.stdout.split("\t")
    if result.returncode != 0 or len(fields) != 8:
        detail = result.stderr.strip().splitlines()
        raise KilnError(f"{path}: not a readable RPM ({detail[-1] if detail else 'no header'})")
    name, epoch, version, release, arch, source, vcs, disttag = fields
    if source == "(none)":
        raise KilnError(f"{path}: a source RPM; the repository takes binary RPMs only")
    return RpmInfo(name, epoch, version, release, arch, vcs, disttag)


def _after(value: str, prefix: str) -> str | None:
    return value[len(prefix):] if value.startswith(prefix) else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _content_type(href: str) -> str:
    return "application/xml" if href.endswith(".xml") else "application/octet-stream"


def _status(error: ClientError) -> int:
    return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")
