"""Source digests remembered between builds: reused only while a file's stat is unchanged."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from packager.build import package
from packager.digests import CACHE_DIR, DigestCache
from packager.manifest import compute_digest, load
from tests.test_package import make_settings

MANIFEST = """\
name: cached
version: 1.0.0
summary: digest cache
license: MIT
files:
  - src: app
    dest: /opt/cached
"""
HOUR_AGO = time.time_ns() - 3600 * 10**9


@pytest.fixture
def app(tmp_path) -> Path:
    """A manifest whose files were last written an hour ago, as in a real checkout."""
    (tmp_path / "app").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "app" / name).write_text(f"{name} content\n")
        os.utime(tmp_path / "app" / name, ns=(HOUR_AGO, HOUR_AGO))
    manifest = tmp_path / "cached.yaml"
    manifest.write_text(MANIFEST)
    return manifest


def recorded(dist: Path) -> dict:
    return json.loads((dist / CACHE_DIR / "cached.json").read_text())["files"]


def fresh_digest(manifest: Path, cache: DigestCache) -> tuple[str, int]:
    """The manifest digest through `cache`, and how many files it took from the record."""
    loaded = load(manifest, digest=False)
    digest = compute_digest(loaded, cache)
    hits = sum(cache.get(entry) is not None for entry in loaded.entries if entry.src)
    return digest, hits


def test_build_records_digests_and_the_next_build_reuses_them(app, tmp_path):
    dist = tmp_path / "dist"
    first = package(make_settings(dist), app)
    files = recorded(dist)
    assert sorted(Path(src).name for src in files) == ["a.txt", "b.txt"]
    digest, hits = fresh_digest(app, DigestCache(dist / CACHE_DIR / "cached.json"))
    assert (digest, hits) == (first["manifest_digest"], 2)
    assert package(make_settings(dist), app)["manifest_digest"] == first["manifest_digest"]


def test_same_size_rewrite_with_the_mtime_put_back_is_hashed_again(app, tmp_path):
    dist = tmp_path / "dist"
    first = package(make_settings(dist), app)
    target = app.parent / "app" / "a.txt"
    target.write_text("A.txt CONTENT\n")  # same size
    os.utime(target, ns=(HOUR_AGO, HOUR_AGO))  # mtime as recorded: only the ctime moved
    digest, hits = fresh_digest(app, DigestCache(dist / CACHE_DIR / "cached.json"))
    assert hits == 1 and digest == load(app).digest != first["manifest_digest"]
    assert package(make_settings(dist), app)["manifest_digest"] == digest


def test_recently_written_files_are_not_recorded(app, tmp_path):
    dist = tmp_path / "dist"
    (app.parent / "app" / "b.txt").write_text("just written\n")
    package(make_settings(dist), app)
    assert sorted(Path(src).name for src in recorded(dist)) == ["a.txt"]


def test_unreadable_or_foreign_records_are_ignored(app, tmp_path):
    cache_file = tmp_path / "dist" / CACHE_DIR / "cached.json"
    cache_file.parent.mkdir(parents=True)
    expected = load(app).digest
    for text in ("not json", json.dumps({"format": 99, "files": {}}),
                 json.dumps({"format": 1, "files": {str(app.parent / "app" / "a.txt"): [1]}})):
        cache_file.write_text(text)
        assert fresh_digest(app, DigestCache(cache_file)) == (expected, 0)
