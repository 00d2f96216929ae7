"""Build a manifest into dist/<name>-<version>-<iteration>.<arch>.rpm.

`package(settings, manifest_path, version=None)` checks the manifest, stages its files into a
private buildroot (hard links where possible, so big files are not copied), runs the backend
(rpmbuild, or fpm when chosen) in a private temp dir with its own HOME, then moves the RPM into
dist/ atomically. Nothing reaches dist/ unless the build succeeded.

An existing dist/ file of the same name is always rebuilt and replaced atomically: builds are
reproducible, so the same inputs give the same bytes, and different inputs never hide behind a
stale file. (Refusing a version that was already *published* with other content is the repo's job.)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cloud.console import say
from cloud.errors import KilnError
from packager import fpm, rpmbuild
from packager.digests import CACHE_DIR, DigestCache
from packager.manifest import Manifest, compute_digest, elf_files, load
from packager.spec import Provenance, scriptlets

BACKENDS = {"rpmbuild": rpmbuild, "fpm": fpm}


def package(settings: Any, manifest_path: str | os.PathLike, version: str | None = None,
            iteration: str | None = None) -> dict:
    """Build the RPM for `manifest_path`; return what was built (path, nevra, sha256, …).
    `version` and `iteration` override the manifest's."""
    manifest = load(manifest_path, version, digest=False, iteration=iteration)
    options = settings["package"]
    backend = choose_backend(options["backend"], options["fpm"])
    if backend == "fpm":  # fpm's spec lets rpmbuild package ELF files as noarch
        check_noarch(manifest)
    inputs = input_paths(manifest)
    commit, committed = git_provenance(manifest.folder, inputs)
    epoch = options["source_date_epoch"]
    if epoch is None:  # the time of the inputs' last commit, else 0 outside git
        epoch = committed or 0
    dist = Path(settings["dist"])
    known = DigestCache(dist / CACHE_DIR / f"{manifest.name}.json")
    say(f"package: {manifest.filename} with {backend} ({options['compression']})")
    with ThreadPoolExecutor(max_workers=2) as pool:
        with tempfile.TemporaryDirectory(prefix="kiln-package-") as temp:
            work = Path(temp)
            root = work / "root"
            digest_job = pool.submit(compute_digest, manifest, known)  # hash while staging
            stage(manifest, root, epoch)
            provenance = Provenance(commit=commit, manifest_digest=digest_job.result())
            built = _build(backend, manifest, root, work, provenance, epoch, options)
            # The RPM hashes from an open handle while it moves into dist/ and the staged tree
            # goes. Renaming over an earlier build is slow on ext4, which starts writing the
            # new file back then (auto_da_alloc), so that is a worker's job too.
            hash_job = pool.submit(_handle_sha256, open(built, "rb"))  # noqa: SIM115
            place_job = pool.submit(place, built, dist / manifest.filename)
            shutil.rmtree(root, ignore_errors=True)
            target = place_job.result()
            known.save()  # once the staged links are gone (see packager.digests)
        digest = hash_job.result()
    say(f"package: wrote {target}")
    return result(manifest, target, digest, commit, backend)


def _build(backend: str, manifest: Manifest, root: Path, work: Path, provenance: Provenance,
           epoch: int, options: Any) -> Path:
    args = (manifest, root, work, provenance, scriptlets(manifest), epoch,
            options["compression"], options["compression_level"])
    if backend == "fpm":
        return fpm.build(*args, command=options["fpm"])
    try:
        return rpmbuild.build(*args)
    except KilnError as error:
        if "Arch dependent binaries in noarch package" in str(error):
            check_noarch(manifest)
        raise


def check_noarch(manifest: Manifest) -> None:
    """A noarch package holding an ELF file fails in one line naming the file and its arch."""
    if manifest.arch != "noarch":
        return
    found = elf_files(manifest.entries)
    if found:
        entry, arch = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise KilnError(f"{manifest.path}: arch: noarch, but {entry.dest}{more} is an ELF "
                        f"binary for {arch} (set arch: {arch}, or arch: auto)")


def result(manifest: Manifest, target: Path, digest: str, commit: str | None,
           backend: str) -> dict:
    return {
        "path": str(target),
        "name": manifest.name,
        "version": manifest.version,
        "rpm_version": manifest.rpm_version,
        "release": manifest.iteration,
        "arch": manifest.arch,
        "sha256": digest,
        "nevra": f"{manifest.name}-{manifest.rpm_version}-{manifest.iteration}.{manifest.arch}",
        "manifest_digest": manifest.digest,
        "commit": commit,
        "backend": backend,
    }


def choose_backend(setting: str, fpm_command: str = "fpm") -> str:
    """auto is rpmbuild: the bytes of a version must not depend on whether fpm happens to be
    installed (fpm runs rpmbuild too). fpm is used when asked for, and must then be installed."""
    if setting == "auto":
        setting = "rpmbuild"
    found = fpm.available(fpm_command) if setting == "fpm" else rpmbuild.available()
    if not found:
        what = fpm_command if setting == "fpm" else "rpmbuild"
        raise KilnError(f"kiln.package.backend: {setting} ({what}) is not installed or not on PATH")
    return setting


def input_paths(manifest: Manifest) -> list[str]:
    """The manifest and the top-level files or folders it packages, relative to its folder.

    The commit recorded in the RPM (and its SOURCE_DATE_EPOCH) is the last one that changed these,
    so a commit elsewhere in the repository does not change the RPM of an unchanged app.
    """
    folder = f"{manifest.folder.resolve()}/"
    tops = {manifest.path.name}
    for entry in manifest.entries:  # src is a real path inside the folder (checked at load)
        if entry.src is not None:
            tops.add(str(entry.src).removeprefix(folder).partition("/")[0])
    return sorted(tops)


def git_commit(folder: Path, inputs: list[str]) -> str | None:
    return git_provenance(folder, inputs)[0]


def git_provenance(folder: Path, inputs: list[str]) -> tuple[str | None, int | None]:
    """The last commit that changed the inputs and its time; the commit is `<sha>-dirty` (with
    a warning) when they have uncommitted changes or untracked files: that build is not that
    commit's. Both git commands run side by side."""
    log = _start_git(folder, "log", "-1", "--format=%H %ct", "HEAD", "--", *inputs)
    status = _start_git(folder, "status", "--porcelain", "--untracked-files=all", "--", *inputs)
    fields, changed = (_finish_git(log) or "").split(), _finish_git(status)
    if len(fields) != 2 or not fields[1].isdigit():
        return None, None
    commit, committed = fields[0], int(fields[1])
    if changed:
        lines = changed.splitlines()
        example = lines[0].split(maxsplit=1)[-1]
        say(f"package: warning: {len(lines)} uncommitted change(s) in the packaged files "
            f"(e.g. {example}); provenance is git:{commit}-dirty")
        return f"{commit}-dirty", committed
    return commit, committed


def _start_git(folder: Path, *args: str) -> subprocess.Popen | None:
    try:
        return subprocess.Popen(["git", "-C", str(folder), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
    except FileNotFoundError:
        return None


def _finish_git(process: subprocess.Popen | None) -> str | None:
    if process is None:
        return None
    output = process.communicate()[0].strip()
    return output or None if process.returncode == 0 else None


def stage(manifest: Manifest, root: Path, epoch: int) -> None:
    """Lay the package's tree out under `root`, every mtime at or clamped to `epoch`.

    A source file newer than the epoch is hard-linked (rpm clamps its mtime in the header); an
    older one is copied and stamped with the epoch, so the header never depends on checkout times.
    Files of trees listed with `%attr(-,…)` must carry their mode on disk: a source with other
    permission bits is copied and chmod-ed, never changed through a link.
    """
    root.mkdir(parents=True)
    top = str(root)
    directories, made = [], {top}
    for entry in manifest.entries:  # sorted by dest: parents come before their children
        path = top + entry.dest  # plain strings: this loop runs once per packaged file
        if entry.kind == "dir":
            _makedirs(path, made)
            os.chmod(path, entry.mode)
            directories.append(path)
            continue
        _makedirs(path.rpartition("/")[0], made)
        if entry.kind == "link":
            os.symlink(entry.target, path)  # rpm clamps its mtime to the epoch
        elif entry.content is not None:
            Path(path).write_bytes(entry.content)
            os.chmod(path, entry.mode)
            os.utime(path, (epoch, epoch))
        elif _linkable(entry, epoch):
            try:
                os.link(entry.src, path)
            except OSError:  # another filesystem, or hard links not allowed: copy instead
                _copy(entry, path, epoch)
        else:
            _copy(entry, path, epoch)
    for path in reversed(directories):  # children before parents
        os.utime(path, (epoch, epoch))


def _makedirs(path: str, made: set[str]) -> None:
    if path not in made:
        os.makedirs(path, exist_ok=True)
        made.add(path)


def _linkable(entry, epoch: int) -> bool:
    if entry.src_stat is None or entry.src_stat.st_mtime < epoch:
        return False
    return stat.S_IMODE(entry.src_stat.st_mode) == entry.mode


def _copy(entry, path: str, epoch: int) -> None:
    shutil.copyfile(entry.src, path)
    os.chmod(path, entry.mode)
    os.utime(path, (epoch, epoch))


def _handle_sha256(handle) -> str:
    with handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def place(built: Path, target: Path) -> Path:
    """Move `built` to `target` atomically: readers see the old file or the new one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(built, target)
    except OSError:  # another filesystem: copy next to the target, then rename
        partial = target.with_name(f".{target.name}.partial")
        try:
            shutil.copyfile(built, partial)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target
