"""Release records: dist/release-<app>-<version>-<release>.json, what a release produced and how.

A release is version-release (the package's version and iteration): iteration 2 of a version has
its own record beside iteration 1's. Without a known release the name is release-<app>-<version>.

A bake writes its part (images per region, shares, RPM, base AMI, run id, timings, API calls);
later steps such as promotion add theirs. Writing merges into the record already there, key by
key, and replaces the file atomically, so a reader never sees half a record.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from cloud.errors import KilnError


def path(settings, app: str, version: str, release: str | None = None) -> Path:
    name = f"{version}-{release}" if release else version
    return Path(settings.dist) / f"release-{app}-{name}.json"


def load(settings, app: str, version: str, release: str | None = None) -> dict:
    """The record, or {} when there is none yet."""
    where = path(settings, app, version, release)
    try:
        return json.loads(where.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise KilnError(f"{where}: not a readable release record ({error})") from None


def write(settings, app: str, version: str, part: dict, release: str | None = None) -> Path:
    """Merge `part` into the record (top-level keys replaced) and write it atomically."""
    where = path(settings, app, version, release)
    where.parent.mkdir(parents=True, exist_ok=True)
    record = {**load(settings, app, version, release), **part}
    with tempfile.NamedTemporaryFile("w", dir=where.parent, prefix=f".{where.name}.",
                                     delete=False) as handle:
        json.dump(record, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
    os.replace(handle.name, where)
    return where
