"""Release records: dist/release-<app>-<version>.json, what a release produced and how.

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


def path(settings, app: str, version: str) -> Path:
    return Path(settings.dist) / f"release-{app}-{version}.json"


def load(settings, app: str, version: str) -> dict:
    """The record, or {} when there is none yet."""
    where = path(settings, app, version)
    try:
        return json.loads(where.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise KilnError(f"{where}: not a readable release record ({error})") from None


def write(settings, app: str, version: str, part: dict) -> Path:
    """Merge `part` into the record (top-level keys replaced) and write it atomically."""
    where = path(settings, app, version)
    where.parent.mkdir(parents=True, exist_ok=True)
    record = {**load(settings, app, version), **part}
    with tempfile.NamedTemporaryFile("w", dir=where.parent, prefix=f".{where.name}.",
                                     delete=False) as handle:
        json.dump(record, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
    os.replace(handle.name, where)
    return where
