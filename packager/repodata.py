"""Local yum metadata work: read repomd.xml and primary.xml, update the metadata with createrepo_c.

The repository's metadata is edited in a local tree that holds `repodata/` and only the RPMs
being added. Adding one package: createrepo_c writes the metadata of that package alone, and its
`<package>` entries are appended to the existing primary, filelists and other streams (the
package count in each root element goes up by one), which are compressed again and named by
their new checksums in a new repomd.xml that keeps every other record as it was. That is what
`createrepo_c --update` would produce, without parsing and re-serializing the metadata of the
thousands of other packages (most of its run time). When the existing metadata is not what this
expects (another compression, sqlite databases or zchunk files listed, other root elements),
`createrepo_c --update --skip-stat --recycle-pkglist --pkglist <new>` does the whole job: it
reuses the old metadata of every other package by its file name without reading (or even
having) the file. Removing packages is that run with the list of the ones to keep and without
`--recycle-pkglist`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from xml.sax.saxutils import escape

from cloud.errors import KilnError

REPO_NS = "{http://linux.duke.edu/metadata/repo}"
COMMON_NS = "{http://linux.duke.edu/metadata/common}"
# The package streams one new package is appended to, by repomd.xml type.
STREAMS = ("primary", "filelists", "other")
ROOT_TAG = re.compile(rb'<(metadata|filelists|otherdata) ([^>]*?)packages="(\d+)"([^>]*)>')
# createrepo_c's own gzip level: the same stream compresses to the same bytes either way.
GZIP_LEVEL = 6


# What a data file's href may be: a plain file name directly under repodata/. Anything else (an
# absolute path, `..`, a sub-folder) would let repomd.xml name a file outside the local tree.
DATA_HREF = re.compile(r"repodata/[A-Za-z0-9_][A-Za-z0-9._+-]*")


def data_files(repomd: bytes) -> dict[str, str]:
    """type → location href (e.g. primary → repodata/<sha>-primary.xml.gz) of a repomd.xml."""
    return {kind: record["href"] for kind, record in data_records(repomd).items()}


def data_records(repomd: bytes) -> dict[str, dict[str, str | None]]:
    """type → {href, checksum type, checksum} of each data file a repomd.xml lists; every href
    checked to be `repodata/<file>`."""
    try:
        root = ET.fromstring(repomd)
    except ET.ParseError as error:
        raise KilnError(f"repodata/repomd.xml is not valid XML: {error}") from None
    records = {}
    for data in root.iter(f"{REPO_NS}data"):
        kind, location = data.get("type"), data.find(f"{REPO_NS}location")
        href = location.get("href") if location is not None else None
        if not href or not DATA_HREF.fullmatch(href) or ".." in href:
            raise KilnError(f"repodata/repomd.xml: data {kind} names {href!r}, not a file "
                            f"directly under repodata/; refusing the metadata")
        checksum = data.find(f"{REPO_NS}checksum")
        records[kind] = {"href": href,
                         "checksum_type": checksum.get("type") if checksum is not None else None,
                         "checksum": checksum.text if checksum is not None else None}
    return records


def inside(tree: Path, href: str) -> Path:
    """`tree/href`, refused unless it resolves to a path inside `tree`."""
    base = tree.resolve()
    path = (base / href).resolve()
    if path == base or base not in path.parents:
        raise KilnError(f"{href}: resolves outside the local repository tree; refusing it")
    return path


def check_file(path: Path, href: str, record: dict) -> None:
    """The data file at `path` has the checksum repomd.xml lists for it."""
    kind = record.get("checksum_type") or ""
    kind = "sha1" if kind == "sha" else kind  # yum's old name for sha1
    if kind not in ("sha1", "sha224", "sha256", "sha384", "sha512") or not record.get("checksum"):
        raise KilnError(f"repodata/repomd.xml: {href} has no usable checksum "
                        f"({record.get('checksum_type')!r}); refusing the metadata")
    digest = hashlib.new(kind)
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    if digest.hexdigest() != record["checksum"].strip():
        raise KilnError(f"{href}: {kind} {digest.hexdigest()[:16]}… is not the one "
                        f"repodata/repomd.xml lists; refusing the metadata")


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


def describe(tree: Path, href: str) -> Path:
    """The metadata of the RPM at `tree/<href>` alone: a sibling tree holding only that RPM (a
    hard link) and the repodata/ createrepo_c wrote for it. Independent of `tree/repodata`."""
    alone = tree.parent / f"{tree.name}.one"
    shutil.rmtree(alone, ignore_errors=True)
    (alone / href).parent.mkdir(parents=True)
    os.link(tree / href, alone / href)
    _createrepo(alone, [href], [], update=False)
    return alone


def append(tree: Path, alone: Path, old_repomd: bytes) -> bool:
    """Append the packages described in `alone` (see `describe`) to the metadata in
    `tree/repodata`, whose repomd.xml is `old_repomd`, and write the new repomd.xml there.
    False, with nothing written, when the existing metadata is not plain gzip'd primary,
    filelists and other as createrepo_c writes them: then use `add_packages`."""
    old = data_files(old_repomd)
    if not set(STREAMS) <= old.keys() or any(kind.endswith(("_db", "_zck")) for kind in old):
        return False
    if not all(old[kind].endswith(".xml.gz") for kind in STREAMS):
        return False
    new = data_files((alone / "repodata/repomd.xml").read_bytes())
    with ThreadPoolExecutor(max_workers=len(STREAMS)) as pool:  # zlib and sha256 drop the GIL
        streams = dict(zip(STREAMS, pool.map(
            lambda kind: _merge(_gunzip(tree / old[kind]), _gunzip(alone / new[kind])),
            STREAMS), strict=True))
        if None in streams.values():
            return False
        records = dict(zip(STREAMS, pool.map(
            lambda kind: _write_stream(tree, kind, streams[kind]), STREAMS), strict=True))
    (tree / "repodata/repomd.xml").write_bytes(_repomd(old_repomd, records))
    return True


def _merge(old: bytes, new: bytes) -> bytes | None:
    """`old` with the packages of `new` appended and the root's package count updated; None
    when the two root elements differ in anything but that count."""
    old_root, new_root = ROOT_TAG.search(old, 0, 4096), ROOT_TAG.search(new, 0, 4096)
    if not old_root or not new_root:
        return None
    if (old_root[1], old_root[2], old_root[4]) != (new_root[1], new_root[2], new_root[4]):
        return None
    closing = b"</" + old_root[1] + b">"
    end, new_end = old.rfind(closing), new.rfind(closing)
    if end < old_root.end() or new_end < new_root.end():
        return None
    count = int(old_root[3]) + int(new_root[3])
    return b"".join([old[:old_root.start(3)], str(count).encode(),
                     old[old_root.end(3):end], new[new_root.end():new_end].lstrip(b"\n"),
                     old[end:]])


def _write_stream(tree: Path, kind: str, data: bytes) -> dict[str, str]:
    """Compress and write one stream under its checksum name; its repomd.xml record fields."""
    packed = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    checksum = hashlib.sha256(packed).hexdigest()
    href = f"repodata/{checksum}-{kind}.xml.gz"
    (tree / href).write_bytes(packed)
    return {"checksum": checksum, "open-checksum": hashlib.sha256(data).hexdigest(),
            "location": href, "size": str(len(packed)), "open-size": str(len(data))}


def _repomd(old_repomd: bytes, records: dict[str, dict[str, str]]) -> bytes:
    """The old repomd.xml with the given records replaced and a new revision."""
    ET.register_namespace("", REPO_NS[1:-1])
    ET.register_namespace("rpm", "http://linux.duke.edu/metadata/rpm")
    root = ET.fromstring(old_repomd)
    now = str(int(time.time()))
    _child(root, "revision").text = now
    for data in root.iter(f"{REPO_NS}data"):
        fields = records.get(data.get("type"))
        if fields is None:
            continue
        for tag in ("checksum", "open-checksum"):
            element = _child(data, tag)
            element.set("type", "sha256")
            element.text = fields[tag]
        _child(data, "location").set("href", fields["location"])
        _child(data, "timestamp").text = now
        _child(data, "size").text = fields["size"]
        _child(data, "open-size").text = fields["open-size"]
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root) + b"\n"


def _child(parent, tag: str):
    found = parent.find(f"{REPO_NS}{tag}")
    return found if found is not None else ET.SubElement(parent, f"{REPO_NS}{tag}")


def _gunzip(path: Path) -> bytes:
    with gzip.open(path, "rb") as handle:
        return handle.read()


def add_packages(tree: Path, hrefs: list[str]) -> None:
    """Add the RPMs at `tree/<href>` to the metadata in `tree/repodata`, keeping the others."""
    _createrepo(tree, hrefs, ["--recycle-pkglist"])


def index(tree: Path, hrefs: list[str]) -> None:
    """Write new metadata in `tree/repodata` listing only the RPMs at `tree/<href>`."""
    _createrepo(tree, hrefs, [], update=False)


def keep_packages(tree: Path, hrefs: list[str]) -> None:
    """Rewrite the metadata in `tree/repodata` to list only the packages at `hrefs`."""
    _createrepo(tree, hrefs, [])


def _createrepo(tree: Path, hrefs: list[str], extra: list[str], update: bool = True) -> None:
    pkglist = tree.parent / f"{tree.name}.pkglist"
    pkglist.write_text("".join(f"{href}\n" for href in hrefs))
    reuse = ["--update", "--skip-stat", "--keep-all-metadata"] if update else []
    args = ["createrepo_c", "--quiet", *reuse, "--pkglist", str(pkglist), "--no-database",
            "--unique-md-filenames", "--workers", "1", *extra, str(tree)]
    try:
        result = subprocess.run(args, capture_output=True, text=True)
    except FileNotFoundError:
        raise KilnError("createrepo_c not found: install it (make apt)") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise KilnError(f"createrepo_c failed on {tree}: {detail[-1] if detail else 'no output'}")


# -- the revision and package count Kiln records (packager/memory.py) -------------------------
REVISION = re.compile(rb"<revision>([^<]*)</revision>")


def revision(repomd: bytes) -> int | None:
    """repomd.xml's <revision> as a number (None: absent or not a number)."""
    found = REVISION.search(repomd)
    value = found[1].strip() if found else b""
    return int(value) if value.isdigit() else None


def with_revision(repomd: bytes, number: int) -> bytes:
    """repomd.xml with its <revision> set to `number` (added after the root tag if absent)."""
    tag = f"<revision>{number}</revision>".encode()
    if REVISION.search(repomd):
        return REVISION.sub(tag, repomd, count=1)
    root = re.search(rb"<repomd[^>]*>", repomd)
    if root is None:
        raise KilnError("repodata/repomd.xml has no <repomd> element")
    return repomd[:root.end()] + b"\n  " + tag + repomd[root.end():]


def package_count(path: Path) -> int:
    """The packages="N" of a primary.xml(.gz)'s root element."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        head = handle.read(4096)
    found = ROOT_TAG.search(head)
    if found is None:
        raise KilnError(f"{path.name}: no package count in its root element")
    return int(found[3])


def listed(path: Path, hrefs: list[str]) -> set[str]:
    """Those of `hrefs` a primary.xml(.gz) lists (a byte search, as published_sha256)."""
    if not hrefs:
        return set()
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    return {href for href in hrefs
            if b'<location href="' + escape(href).encode() + b'"' in data}
