"""The yum repository's memory of itself, kept in the build account's lock table.

Whoever can write the bucket can delete repomd.xml, put back an older (validly signed) version
of it, or edit a ledger kept next to it; none of them can write the lock table. So the table
holds what the bucket cannot be trusted to: one item per repository, LockKey
`repo-state/<bucket>/<prefix>`, with no ExpiresAt (the table's TTL never removes it):

- Revision, Sha256, Packages: the last repomd.xml Kiln wrote and saw land: its <revision> (a
  number each write raises by one), the sha256 of its bytes and how many packages it lists;
- PendingRevision, PendingSha256, PendingPackages: the repomd.xml a writer is about to PUT,
  recorded before the PUT, so a run killed between its PUT and `confirm` leaves a repomd.xml
  the memory still knows;
- Ledger: the files the metadata no longer names, waiting out their grace period before they
  are deleted (href → epoch seconds).

A reader accepts only a repomd.xml whose digest is one of the two recorded; a missing one is a
lost index, never an empty repository, once Kiln has written one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from cloud.aws import Aws
from cloud.errors import KilnError


@dataclass(frozen=True)
class Written:
    """A repomd.xml Kiln wrote: its revision, the sha256 of its bytes, its package count."""

    revision: int
    sha256: str
    packages: int

    def describe(self) -> str:
        return f"revision {self.revision}, {self.packages} package(s), sha256 {self.sha256[:16]}…"


@dataclass
class State:
    confirmed: Written | None = None
    pending: Written | None = None
    ledger: dict[str, int] = field(default_factory=dict)

    @property
    def known(self) -> bool:
        """True once Kiln has confirmed writing an index."""
        return self.confirmed is not None

    @property
    def revision(self) -> int:
        """The highest revision recorded (the next write goes above it)."""
        return max([w.revision for w in (self.confirmed, self.pending) if w] or [0])

    def match(self, sha256: str) -> Written | None:
        """The recorded write whose bytes have this digest."""
        return next((w for w in (self.confirmed, self.pending) if w and w.sha256 == sha256),
                    None)


class Memory:
    def __init__(self, aws: Aws, table: str, bucket: str, prefix: str):
        self.db = aws.client("dynamodb")
        self.table = table
        self.key = f"repo-state/{bucket}/{prefix}"

    def where(self) -> str:
        return f"item {self.key} of table {self.table}"

    def read(self) -> State:
        item = self._call("read", self.db.get_item, TableName=self.table, Key=self._key(),
                          ConsistentRead=True).get("Item") or {}
        ledger = {href: int(value["N"])
                  for href, value in item.get("Ledger", {}).get("M", {}).items()}
        return State(_written(item, ""), _written(item, "Pending"), ledger)

    def stage(self, written: Written) -> None:
        """Record the repomd.xml about to be written, before its PUT. Only above every revision
        recorded: a writer whose lease ran out must not replace a newer writer's entry (that
        writer's repomd.xml would then match neither, and read as a lost index)."""
        try:
            self.db.update_item(
                TableName=self.table, Key=self._key(),
                UpdateExpression="SET PendingRevision = :r, PendingSha256 = :s, "
                                 "PendingPackages = :p",
                ConditionExpression="(attribute_not_exists(Revision) OR Revision < :r) AND "
                                    "(attribute_not_exists(PendingRevision) OR "
                                    "PendingRevision < :r OR PendingSha256 = :s)",
                ExpressionAttributeValues=_values(written))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise self._failure("write", error) from None
            raise KilnError(f"another writer recorded revision {self.read().revision} in "
                            f"{self.where()} while this one was about to write revision "
                            f"{written.revision} (a lease that expired?); nothing was changed: "
                            f"run it again") from None

    def confirm(self, written: Written) -> None:
        """The staged repomd.xml landed: it is the last one Kiln wrote."""
        self._update("SET Revision = :r, Sha256 = :s, Packages = :p "
                     "REMOVE PendingRevision, PendingSha256, PendingPackages", _values(written))

    def save_ledger(self, ledger: dict[str, int]) -> None:
        self._update("SET Ledger = :l",
                     {":l": {"M": {href: {"N": str(since)} for href, since in ledger.items()}}})

    def _update(self, expression: str, values: dict) -> None:
        self._call("write", self.db.update_item, TableName=self.table, Key=self._key(),
                   UpdateExpression=expression, ExpressionAttributeValues=values)

    def _key(self) -> dict:
        return {"LockKey": {"S": self.key}}

    def _call(self, verb: str, call, **params):
        try:
            return call(**params)
        except ClientError as error:
            raise self._failure(verb, error) from None

    def _failure(self, verb: str, error: ClientError) -> KilnError:
        detail = error.response.get("Error", {})
        return KilnError(f"cannot {verb} the repository's record ({self.where()}): "
                         f"{detail.get('Code', '')} {detail.get('Message', '')}".rstrip())


def _written(item: dict, prefix: str) -> Written | None:
    if f"{prefix}Sha256" not in item:
        return None
    return Written(int(item[f"{prefix}Revision"]["N"]), item[f"{prefix}Sha256"]["S"],
                   int(item[f"{prefix}Packages"]["N"]))


def _values(written: Written) -> dict:
    return {":r": {"N": str(written.revision)}, ":s": {"S": written.sha256},
            ":p": {"N": str(written.packages)}}
