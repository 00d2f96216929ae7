"""The fpm backend: the same staged tree and settings, handed to `fpm -s dir -t rpm`.

fpm runs rpmbuild underneath and copies text values into its spec as they are, so they are
escaped here the same way as for the rpmbuild backend. The payload and reproducibility settings
reach it as rpmbuild defines and spec lines (`--rpm-tag`), so both backends produce the same
header and file list.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from cloud.errors import KilnError
from packager.manifest import Manifest
from packager.rpmbuild import build_env, run
from packager.spec import Provenance, build_macros, description, escape, payload

# fpm's own names for the scriptlets.
SCRIPT_FLAGS = {"pre": "--before-install", "post": "--after-install",
                "preun": "--before-remove", "postun": "--after-remove"}
# fpm's --rpm-compression knows gzip, xz and none; zstd is set through a spec line below.
FPM_COMPRESSION = {"gzip": "gzip", "xz": "xz", "none": "none", "zstd": "none"}
DEFINES = ("_buildhost", "source_date_epoch_from_changelog", "clamp_mtime_to_source_date_epoch",
           "use_source_date_epoch_as_buildtime", "_buildtime", "__os_install_post",
           "debug_package", "_build_id_links")


def available() -> bool:
    return shutil.which("fpm") is not None


def fpm_argv(manifest: Manifest, root: Path, output: Path, provenance: Provenance,
             script_files: dict[str, Path], epoch: int, compression: str,
             level: int | None, workdir: Path | None = None) -> list[str]:
    """The argument list for fpm, one flag per value: no shell, nothing to quote."""
    argv = ["fpm", "-s", "dir", "-t", "rpm", "--force", "--package", str(output),
            "--name", manifest.name, "--version", manifest.rpm_version,
            "--iteration", manifest.iteration, "--architecture", manifest.arch,
            "--rpm-summary", escape(manifest.summary),
            "--description", description(manifest.description),
            "--license", escape(manifest.license), "--rpm-digest", "sha256",
            "--rpm-compression", FPM_COMPRESSION[compression],
            "--rpm-user", "root", "--rpm-group", "root",
            "--rpm-defattrfile", "-", "--rpm-defattrdir", "-"]
    for flag, value in (("--url", manifest.url), ("--vendor", manifest.vendor),
                        ("--maintainer", manifest.maintainer)):
        if value:
            argv += [flag, escape(value)]
    for flag, values in (("--depends", manifest.depends), ("--provides", manifest.provides),
                         ("--conflicts", manifest.conflicts)):
        for value in values:
            argv += [flag, value]
    argv += _tags(provenance, compression, level)
    macros = build_macros(epoch, compression, level)
    for name in DEFINES:
        argv += ["--rpm-rpmbuild-define", f"{name} {macros[name]}"]
    for key, path in sorted(script_files.items()):
        argv += [SCRIPT_FLAGS[key], str(path)]
    argv += _file_flags(manifest)
    if workdir:
        argv += ["--workdir", str(workdir)]
    argv += ["--chdir", str(root), *sorted(p.name for p in root.iterdir())]
    return argv


def _tags(provenance: Provenance, compression: str, level: int | None) -> list[str]:
    # fpm writes its own %define _binary_payload first; a later line in the spec wins.
    lines = [f"%define _binary_payload {payload(compression, level)}"]
    lines += [f"{tag}: {value}" for tag, value in provenance.tags()]
    return [arg for line in lines for arg in ("--rpm-tag", line)]


def _file_flags(manifest: Manifest) -> list[str]:
    argv = []
    for entry in manifest.entries:
        if entry.kind == "dir":
            argv += ["--directories", entry.dest]
        if entry.kind == "config":
            argv += ["--config-files", entry.dest]
        argv += ["--rpm-attr", f"{entry.mode:04o},{entry.owner},{entry.group}:{entry.dest}"]
    return argv


def build(manifest: Manifest, root: Path, work: Path, provenance: Provenance,
          scripts: dict[str, str], epoch: int, compression: str, level: int | None) -> Path:
    """Build the RPM with fpm from the staged `root`; return its path inside `work`."""
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    script_files = {}
    for key, text in scripts.items():
        path = work / f"{key}.sh"
        # fpm copies script text into its spec verbatim: escape rpm's macro character.
        path.write_text(text.replace("%", "%%"))
        script_files[key] = path
    output = work / manifest.filename
    argv = fpm_argv(manifest, root, output, provenance, script_files, epoch, compression, level,
                    workdir=home)
    # fpm is a Ruby program that may live in the user's gem dir: keep the caller's environment.
    run(argv, env={**os.environ, **build_env(home, epoch, work),
                   "HOME": os.environ.get("HOME", "/")})
    if not output.is_file():
        raise KilnError(f"fpm: {manifest.filename} was not produced in {work}")
    return output
