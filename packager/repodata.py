"""Local yum metadata work: read repomd.xml and primary.xml, update the metadata with createrepo_c.

The repository's metadata is edited in a local tree that holds `repodata/` and only the RPMs
being added: `createrepo_c --update --skip-stat` reuses the old metadata of every other package
by its file name without reading (or even having) the file, `--recycle-pkglist` keeps them all in
the repository, and `--pkglist` names the new ones. Removing packages is the same run with the
list of the ones to keep and without `--recycle-pkglist`.
"""

from __future__ import annotations

import gzip
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape

from cloud.errors import KilnError

REPO_NS = "{http://linux.duke.edu/metadata/repo}"
COMMON_NS = "{http://linux.duke.edu/metadata/common}"


def data_files(repomd: bytes) -> dict[str, str]:
    """type → location href (e.g. primary → repodata/<sha>-primary.xml.gz) of a repomd.xml."""
    try:
        root = ET.fromstring(repomd)
    except ET.ParseError as error:
        raise KilnError(f"repodata/repomd.xml is not valid XML: {error}") from None
    return {data.get("type"): data.find(f"{REPO_NS}location").get("href")
            for data in root.iter(f"{REPO_NS}data")}


def read_primary(path: Path) -> list[dict]:
    """Every package in a primary.xml(.gz), read as a stream (thousands of packages)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    packages = []
    with opener(path, "rb") as handle:
        for _event, element in ET.iterparse(handle):
            if element.tag == f"{COMMON_NS}package":
                packages.append(_package(element))
                element.clear()
    return packages


def published_sha256(path: Path, href: str) -> str | None:
    """The sha256 that primary.xml(.gz) records for the package at `href`, if listed.

    A byte search rather than an XML parse: a publish asks this once, on a repository of
    thousands of packages, and the full parse would cost more than the rest of the check."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    found = data.find(b'<location href="' + escape(href).encode() + b'"')
    if found < 0:
        return None
    start = data.rfind(b"<package ", 0, found)
    match = re.search(rb'<checksum type="sha256"[^>]*>([0-9a-f]{64})</checksum>', data[start:found])
    return match.group(1).decode() if match else None


def _package(element) -> dict:
    version = element.find(f"{COMMON_NS}version")
    checksum = element.find(f"{COMMON_NS}checksum")
    return {
        "name": element.findtext(f"{COMMON_NS}name"),
        "epoch": version.get("epoch") or "0",
        "version": version.get("ver"),
        "release": version.get("rel"),
        "arch": element.findtext(f"{COMMON_NS}arch"),
        "sha256": checksum.text if checksum.get("type") == "sha256" else None,
        "size": int(element.find(f"{COMMON_NS}size").get("package")),
        "path": element.find(f"{COMMON_NS}location").get("href"),
    }


def add_packages(tree: Path, hrefs: list[str]) -> None:
    """Add the RPMs at `tree/<href>` to the metadata in `tree/repodata`, keeping the others."""
    _createrepo(tree, hrefs, ["--recycle-pkglist"])


def keep_packages(tree: Path, hrefs: list[str]) -> None:
    """Rewrite the metadata in `tree/repodata` to list only the packages at `hrefs`."""
    _createrepo(tree, hrefs, [])


def _createrepo(tree: Path, hrefs: list[str], extra: list[str]) -> None:
    pkglist = tree.parent / f"{tree.name}.pkglist"
    pkglist.write_text("".join(f"{href}\n" for href in hrefs))
    args = ["createrepo_c", "--quiet", "--update", "--skip-stat", "--pkglist", str(pkglist),
            "--no-database", "--unique-md-filenames", "--keep-all-metadata", "--workers", "1",
            *extra, str(tree)]
    try:
        result = subprocess.run(args, capture_output=True, text=True)
    except FileNotFoundError:
        raise KilnError("createrepo_c not found: install it (make apt)") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise KilnError(f"createrepo_c failed on {tree}: {detail[-1] if detail else 'no output'}")
