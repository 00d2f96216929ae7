"""The fpm backend: the same staged tree and settings, handed to `fpm -s dir -t rpm`.

fpm runs rpmbuild underneath and copies text values into its spec as they are, so they are
escaped here the same way as for the rpmbuild backend. The payload and reproducibility settings
reach it as rpmbuild defines and spec lines (`--rpm-tag`), so both backends produce the same
header and file list (README: "The fpm backend" lists what still differs, and why).

What fpm would otherwise make different from build to build is pinned: its changelog (dated
today, signed `<user@host>`) is replaced by an empty one, Packager is always given, and HOME is
a private directory so the user's ~/.rpmmacros never reaches rpmbuild. Modes come from the staged
tree (`%defattr(-,…)`); only entries owned by someone other than root need a flag,
and all per-path flags go through `--fpm-options-file` files, so the argument list stays short
whatever the number of files.
"""

from __future__ import annotations

import os
import shlex
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
# fpm refuses an options file larger than 100 KiB; each file ends by loading the next one.
OPTIONS_FILE_LIMIT = 90_000


def available(command: str = "fpm") -> bool:
    return shutil.which(command) is not None


def fpm_argv(manifest: Manifest, root: Path, output: Path, provenance: Provenance,
             script_files: dict[str, Path], epoch: int, compression: str,
             level: int | None, workdir: Path, command: str = "fpm") -> list[str]:
    """The argument list for fpm, one flag per value: no shell, nothing to quote. Per-path flags
    are written to options files under `workdir` (see `path_flags`)."""
    argv = [command, "-s", "dir", "-t", "rpm", "--force", "--package", str(output),
            "--name", manifest.name, "--version", manifest.rpm_version,
            "--iteration", manifest.iteration, "--architecture", manifest.arch,
            "--rpm-summary", escape(manifest.summary),
            "--description", description(manifest.description),
            "--license", escape(manifest.license), "--rpm-digest", "sha256",
            "--rpm-compression", FPM_COMPRESSION[compression],
            "--category", "Unspecified",  # rpm's own default Group
            "--maintainer", escape(manifest.maintainer or "(none)"),
            "--rpm-changelog", str(_empty_changelog(workdir)),
            "--rpm-user", "root", "--rpm-group", "root",
            "--rpm-defattrfile", "-", "--rpm-defattrdir", "-"]
    if manifest.epoch is not None:
        argv += ["--epoch", str(manifest.epoch)]
    for flag, value in (("--url", manifest.url), ("--vendor", manifest.vendor)):
        if value:
            argv += [flag, escape(value)]
    for flag, values in (("--depends", manifest.depends), ("--provides", manifest.provides),
                         ("--conflicts", manifest.conflicts),
                         ("--replaces", manifest.replaces)):
        for value in values:
            argv += [flag, value]
    argv += _tags(provenance, compression, level)
    macros = build_macros(epoch, compression, level)
    for name in DEFINES:
        argv += ["--rpm-rpmbuild-define", f"{name} {macros[name]}"]
    for key, path in sorted(script_files.items()):
        argv += [SCRIPT_FLAGS[key], str(path)]
    argv += options_files(path_flags(manifest), workdir)
    argv += ["--workdir", str(workdir)]
    # `--`: a top-level path starting with `-` is a path, not an option.
    argv += ["--chdir", str(root), "--", *sorted(p.name for p in root.iterdir())]
    return argv


def _empty_changelog(workdir: Path) -> Path:
    path = workdir / "changelog"
    path.write_text("")
    return path


def _tags(provenance: Provenance, compression: str, level: int | None) -> list[str]:
    # fpm writes its own %define _binary_payload first; a later line in the spec wins.
    lines = [f"%define _binary_payload {payload(compression, level)}"]
    lines += [f"{tag}: {value}" for tag, value in provenance.tags()]
    return [arg for line in lines for arg in ("--rpm-tag", line)]


def path_flags(manifest: Manifest) -> list[list[str]]:
    """fpm's per-path flags: every source tree and directory owned (`--directories` is
    recursive), config files, and `--rpm-attr` for entries not owned by root."""
    flags = []
    trees = {entry.tree for entry in manifest.entries if entry.tree}
    config_trees = {entry.tree for entry in manifest.entries
                    if entry.kind == "config" and entry.tree}
    for entry in manifest.entries:
        if entry.kind == "dir" and (entry.tree is None or entry.dest in trees):
            flags.append(["--directories", entry.dest])
        if entry.dest in config_trees or entry.kind == "config" and entry.tree is None:
            flags.append(["--config-files", entry.dest])
        if (entry.owner, entry.group) != ("root", "root"):
            mode = "-" if entry.kind == "link" else f"{entry.mode:o}"
            flags.append(["--rpm-attr",
                          f"{mode},{entry.owner},{entry.group}:{fpm_rpm_name(entry.dest)}"])
    return flags


def options_files(flags: list[list[str]], workdir: Path) -> list[str]:
    """Write `flags` to chained options files (each under fpm's size limit, each loading the
    next); return the arguments that load the first."""
    if not flags:
        return []
    chunks, current, size = [], [], 0
    for flag in flags:
        line = shlex.join(flag)
        if size + len(line) > OPTIONS_FILE_LIMIT and current:
            chunks.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    chunks.append(current)
    paths = [workdir / f"options-{index}" for index in range(len(chunks))]
    for index, lines in enumerate(chunks):
        if index + 1 < len(paths):
            lines = [*lines, shlex.join(["--fpm-options-file", str(paths[index + 1])])]
        paths[index].write_text("\n".join(lines) + "\n")
    return ["--fpm-options-file", str(paths[0])]


def fpm_rpm_name(name: str) -> str:
    """fpm's rpm_fix_name: the key under which fpm looks up a path's `--rpm-attr`."""
    if not any(char in name for char in " \t*?%${}[]"):
        return name
    table = {" ": "?", "\t": "?", "%": "[%]", "$": "[$]", "?": "[?]", "*": "[*]", "[": "[\\[]",
             "]": "[\\]]", "{": "?", "}": "?", '"': '\\"', "'": "\\'", "\\": "\\\\\\\\"}
    return "".join(table.get(char, char) for char in name)


def ruby_env(home: Path) -> dict[str, str]:
    """The caller's environment with a private HOME. A gem installed with `--user-install`
    lives under the real HOME, which Ruby finds through HOME: those gem dirs go on GEM_PATH."""
    env = dict(os.environ)
    real_home = Path(os.environ.get("HOME", "/nonexistent"))
    gem_dirs = [str(path) for pattern in (".gem/ruby/*", ".local/share/gem/ruby/*")
                for path in sorted(real_home.glob(pattern)) if path.is_dir()]
    if gem_dirs:
        env["GEM_PATH"] = os.pathsep.join(filter(None, [env.get("GEM_PATH"), *gem_dirs]))
    env["HOME"] = str(home)
    return env


def build(manifest: Manifest, root: Path, work: Path, provenance: Provenance,
          scripts: dict[str, str], epoch: int, compression: str, level: int | None,
          command: str = "fpm") -> Path:
    """Build the RPM with fpm from the staged `root`; return its path inside `work`."""
    home = work / "home"
    fpm_work = work / "fpm"
    for folder in (home, fpm_work):
        folder.mkdir(parents=True, exist_ok=True)
    script_files = {}
    for key, text in scripts.items():
        path = work / f"{key}.sh"
        # fpm copies script text into its spec verbatim: escape rpm's macro character.
        path.write_text(text.replace("%", "%%"))
        script_files[key] = path
    output = work / manifest.filename
    argv = fpm_argv(manifest, root, output, provenance, script_files, epoch, compression, level,
                    workdir=fpm_work, command=command)
    # build_env: the private HOME, the epoch, C locale and the same small libmagic database
    # as the rpmbuild backend (rpm records each file's class in the header).
    run(argv, env={**ruby_env(home), **build_env(home, epoch, work)})
    if not output.is_file():
        raise KilnError(f"fpm: {manifest.filename} was not produced in {work}")
    return output
