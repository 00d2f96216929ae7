"""The sha256 of an app's source files, remembered between builds under dist/.kiln-cache/.

The manifest digest goes into the RPM header, so every byte the package ships is hashed before
rpmbuild can start (a second full read of a 200 MB file, on top of rpmbuild's own). A source
whose device, inode, size, mtime and ctime all match what was recorded when it was hashed has
the same bytes: writing a file moves its mtime and ctime, and setting the mtime back moves the
ctime again. Only then is the recorded digest reused; any doubt means hashing again.

Staging hard-links the sources into the buildroot, and the link and its removal move their ctime.
So the record is written after the build, from a fresh stat taken once the buildroot is gone, and
only for files whose size and mtime are still those they had when they were hashed. A file
modified in the last seconds before the build is not recorded: file times are coarse (a few
milliseconds), and a write just after the stat could otherwise leave its mtime unchanged.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from packager.manifest import Entry

CACHE_DIR = ".kiln-cache"
FORMAT = 1
SETTLED_NS = 2_000_000_000  # a file's mtime this much older than the build: no write can tie it


def _key(info: os.stat_result) -> list[int]:
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


class DigestCache:
    """One app's recorded file digests: `get` and `put` during a build, `save` after it."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, list] | None = None  # read by the first get, in the hash thread
        self.hashed: dict[str, tuple[os.stat_result, str]] = {}
        self.settled = time.time_ns() - SETTLED_NS

    def get(self, entry: Entry) -> str | None:
        if self.records is None:
            self.records = _read(self.path)
        record = self.records.get(str(entry.src))
        if record is None or entry.src_stat is None or record[:5] != _key(entry.src_stat):
            return None
        self.hashed[str(entry.src)] = (entry.src_stat, record[5])
        return record[5]

    def put(self, entry: Entry, hexdigest: str) -> None:
        if entry.src_stat is not None:
            self.hashed[str(entry.src)] = (entry.src_stat, hexdigest)

    def save(self) -> None:
        """Record this build's files under their current stat; drop files it did not package."""
        records = {}
        for src, (before, hexdigest) in self.hashed.items():
            try:
                now = os.stat(src)
            except OSError:
                continue
            same = (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) == (
                before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns)
            if same and now.st_mtime_ns < self.settled:
                records[src] = [*_key(now), hexdigest]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps({"format": FORMAT, "files": records}))
        os.replace(partial, self.path)  # concurrent builds: the last complete record wins


def _read(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return {}
    files = data.get("files")
    return {src: record for src, record in files.items()
            if isinstance(record, list) and len(record) == 6} if isinstance(files, dict) else {}
