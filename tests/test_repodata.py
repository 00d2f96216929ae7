"""Appending one package to existing repodata gives what `createrepo_c --update` gives, with the
real createrepo_c, modifyrepo_c and rpm."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from packager import repodata
from tests.repo_helpers import build_rpm

# One worker runs the module (an xdist group): its module-scoped `packages` is made once.
pytestmark = pytest.mark.xdist_group("repodata")

REPO = repodata.REPO_NS


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rpms")
    return [build_rpm(folder, name, version) for name, version in
            [("alpha", "1.0.0"), ("beta", "0.1.0"), ("alpha", "1.1.0")]]


def make_tree(root: Path, rpms: list[Path], *createrepo_args: str) -> tuple[Path, list[str]]:
    """A repository of `rpms[:-1]` with all of `rpms` under Packages/; the hrefs."""
    tree = root / "repo"
    (tree / "Packages").mkdir(parents=True)
    hrefs = []
    for rpm in rpms:
        shutil.copyfile(rpm, tree / "Packages" / rpm.name)
        hrefs.append(f"Packages/{rpm.name}")
    listing = root / "first.pkglist"
    listing.write_text("".join(f"{href}\n" for href in hrefs[:-1]))
    subprocess.run(["createrepo_c", "--quiet", "--pkglist", str(listing), *createrepo_args,
                    str(tree)], check=True, capture_output=True)
    return tree, hrefs


def streams(tree: Path) -> dict[str, bytes]:
    files = repodata.data_files((tree / "repodata/repomd.xml").read_bytes())
    return {kind: gzip.decompress((tree / files[kind]).read_bytes())
            for kind in repodata.STREAMS}


def test_append_gives_what_createrepo_update_gives(tmp_path, packages):
    tree, hrefs = make_tree(tmp_path / "a", packages, "--no-database")
    other, _ = make_tree(tmp_path / "b", packages, "--no-database")
    # An extra record (as updateinfo or modules would be) is kept as it was.
    (tmp_path / "notes.xml").write_text("<notes/>\n")
    subprocess.run(["modifyrepo_c", "--mdtype", "notes", str(tmp_path / "notes.xml"),
                    str(tree / "repodata")], check=True, capture_output=True)
    old_repomd = (tree / "repodata/repomd.xml").read_bytes()
    old_files = {href: (tree / href).read_bytes()
                 for href in repodata.data_files(old_repomd).values()}

    alone = repodata.describe(tree, hrefs[-1])
    assert repodata.append(tree, alone, old_repomd)
    repodata.add_packages(other, [hrefs[-1]])

    appended, updated = streams(tree), streams(other)
    for kind in repodata.STREAMS:
        assert b'packages="3"' in appended[kind][:400]
        # Same entries; createrepo_c may order them otherwise.
        assert sorted(appended[kind].splitlines()) == sorted(updated[kind].splitlines())
        ET.fromstring(appended[kind])  # well-formed
    primary = tree / repodata.data_files((tree / "repodata/repomd.xml").read_bytes())["primary"]
    assert sorted(p["path"] for p in repodata.read_primary(primary)) == sorted(hrefs)
    for href, body in old_files.items():  # the old files stay for readers of the old index
        assert (tree / href).read_bytes() == body

    root = ET.fromstring((tree / "repodata/repomd.xml").read_bytes())
    records = {data.get("type"): data for data in root.iter(f"{REPO}data")}
    assert set(records) == {*repodata.STREAMS, "notes"}
    assert records["notes"].find(f"{REPO}location").get("href") in old_files
    for kind in repodata.STREAMS:
        record = records[kind]
        href = record.find(f"{REPO}location").get("href")
        packed = (tree / href).read_bytes()
        assert href == f"repodata/{hashlib.sha256(packed).hexdigest()}-{kind}.xml.gz"
        assert record.findtext(f"{REPO}checksum") == hashlib.sha256(packed).hexdigest()
        assert record.findtext(f"{REPO}size") == str(len(packed))
        opened = gzip.decompress(packed)
        assert record.findtext(f"{REPO}open-checksum") == hashlib.sha256(opened).hexdigest()
        assert record.findtext(f"{REPO}open-size") == str(len(opened))


def test_metadata_with_sqlite_databases_is_left_to_createrepo(tmp_path, packages):
    tree, hrefs = make_tree(tmp_path, packages)  # createrepo_c's default: with databases
    old_repomd = (tree / "repodata/repomd.xml").read_bytes()
    assert "primary_db" in repodata.data_files(old_repomd)
    before = sorted(p.name for p in (tree / "repodata").iterdir())

    alone = repodata.describe(tree, hrefs[-1])
    assert not repodata.append(tree, alone, old_repomd)
    assert sorted(p.name for p in (tree / "repodata").iterdir()) == before
    assert (tree / "repodata/repomd.xml").read_bytes() == old_repomd


def test_merge_refuses_other_root_elements():
    old = b'<?xml version="1.0"?>\n<metadata xmlns="a" packages="1">\n<package/>\n</metadata>'
    new = b'<?xml version="1.0"?>\n<metadata xmlns="b" packages="1">\n<package/>\n</metadata>'
    assert repodata._merge(old, new) is None
    merged = repodata._merge(old, old.replace(b"<package/>", b"<package n='2'/>"))
    assert merged == (b'<?xml version="1.0"?>\n<metadata xmlns="a" packages="2">\n<package/>\n'
                      b"<package n='2'/>\n</metadata>")
