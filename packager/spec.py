"""What both backends share: the scriptlets, the payload settings, and the rpmbuild spec text.

Every manifest value that reaches a spec is escaped here: `%` becomes `%%` (rpm expands macros in
tags, descriptions and scriptlets), a description line that would read as a section header gets a
leading space, and single-line tags were already refused with newlines by the manifest loader.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from cloud.errors import KilnError
from packager.manifest import Manifest

# rpm's name for each scriptlet, in spec order.
SCRIPTLETS = ("pre", "post", "preun", "postun")
PAYLOADS = {"zstd": ("w{level}T0.zstdio", 3), "gzip": ("w{level}.gzdio", 6),
            "xz": ("w{level}T0.xzdio", 6), "none": ("w.ufdio", 0)}


@dataclass(frozen=True)
class Provenance:
    """Where a build came from: recorded in the header, queryable with `rpm -qp --qf`."""

    commit: str | None
    manifest_digest: str

    def tags(self) -> list[tuple[str, str]]:
        tags = [("DistTag", f"kiln-manifest-sha256:{self.manifest_digest}")]
        if self.commit:
            tags.insert(0, ("VCS", f"git:{self.commit}"))
        return tags


# rpmbuild classifies every file with libmagic's full database (about 1.5 ms a file) to feed the
# dependency generators, which Kiln turns off (AutoReqProv: no). Pointing libmagic at this small
# database (MAGIC=...) keeps what still matters, ELF word size for rpm's multilib file colors, and
# makes packages with thousands of files build an order of magnitude faster.
MAGIC_RULES = "0\tstring\t\\177ELF\tELF\n>4\tbyte\t1\t32-bit\n>4\tbyte\t2\t64-bit\n"


def payload(compression: str, level: int | None) -> str:
    """The rpm `_binary_payload` value for a compression name and an optional level."""
    template, default = PAYLOADS[compression]
    return template.format(level=default if level is None else level)


def build_macros(epoch: int, compression: str, level: int | None) -> dict[str, str]:
    """rpmbuild settings for prebuilt application files: fast, reproducible, no debuginfo."""
    return {
        "_binary_payload": payload(compression, level),
        "_binary_filedigest_algorithm": "8",  # sha256
        "_buildhost": "kiln",
        "source_date_epoch_from_changelog": "0",
        "clamp_mtime_to_source_date_epoch": "1",
        "use_source_date_epoch_as_buildtime": "1",
        "_buildtime": str(epoch),
        # The brp scripts strip and compress binaries and docs: wrong for prebuilt app files,
        # and they dominate the build time of packages with many files.
        "__os_install_post": "%{nil}",
        "__spec_install_post": "%{nil}",
        "debug_package": "%{nil}",
        "_build_id_links": "none",
        "_unpackaged_files_terminate_build": "1",
    }


def scriptlets(manifest: Manifest) -> dict[str, str]:
    """Each scriptlet's shell text: the generated parts (account, unit) then the manifest's own."""
    generated = {key: [] for key in SCRIPTLETS}
    if manifest.user:
        generated["pre"].append(_account_script(manifest))
    if manifest.service_unit:
        unit = f"{manifest.name}.service"
        running = "[ -d /run/systemd/system ]"
        generated["post"].append(f"if {running}; then\n"
                                 "  systemctl daemon-reload >/dev/null 2>&1 || :\nfi\n")
        generated["preun"].append(f'if [ "$1" -eq 0 ] && {running}; then\n'
                                  f"  systemctl stop {unit} >/dev/null 2>&1 || :\nfi\n")
        generated["postun"].append(f"if {running}; then\n"
                                   "  systemctl daemon-reload >/dev/null 2>&1 || :\n"
                                   f'  if [ "$1" -ge 1 ]; then systemctl try-restart {unit} '
                                   ">/dev/null 2>&1 || :; fi\nfi\n")
    own = manifest_scriptlets(manifest.scripts)
    result = {}
    for key in SCRIPTLETS:
        parts = generated[key] + ([own[key]] if key in own else [])
        if parts:
            result[key] = "\n".join(parts)
    return result


def manifest_scriptlets(scripts: dict[str, str]) -> dict[str, str]:
    """The manifest's scripts as rpm scriptlets, composed as fpm composes them: with an upgrade
    script, %pre/%post tell an install ($1 = 1) from an upgrade ($1 > 1), and %preun/%postun run
    on removal only ($1 = 0); without one, each script is its scriptlet as it is."""
    if not ({"before_upgrade", "after_upgrade"} & set(scripts)):
        names = {"before_install": "pre", "after_install": "post", "before_remove": "preun",
                 "after_remove": "postun"}
        return {names[key]: text for key, text in scripts.items()}
    result = {}
    for key, install, upgrade in (("pre", "before_install", "before_upgrade"),
                                  ("post", "after_install", "after_upgrade")):
        if install in scripts or upgrade in scripts:
            result[key] = (f"upgrade() {{\n    :\n{scripts.get(upgrade, '')}}}\n"
                           f"_install() {{\n    :\n{scripts.get(install, '')}}}\n"
                           'if [ "${1}" -eq 1 ]\nthen\n    _install\n'
                           'elif [ "${1}" -gt 1 ]\nthen\n    upgrade\nfi\n')
    for key, remove in (("preun", "before_remove"), ("postun", "after_remove")):
        if remove in scripts:
            result[key] = f'if [ "${{1}}" -eq 0 ]\nthen\n    :\n{scripts[remove]}fi\n'
    return result


def _account_script(manifest: Manifest) -> str:
    user = manifest.user
    system = "-r " if user.system else ""
    # Every value is shell-quoted: a manifest is input, and %pre runs as root on every install.
    name, group, home = (shlex.quote(v) for v in (user.name, user.group, user.home))
    comment = shlex.quote(f"{manifest.name} service account")
    missing = shlex.quote(f"{manifest.name}: useradd not found, account {user.name} not created")
    # Guarded so an installroot without shadow-utils still installs; a real host always has it.
    return (
        "if command -v useradd >/dev/null 2>&1; then\n"
        f"  getent group {group} >/dev/null 2>&1 || groupadd {system}{group}\n"
        f"  getent passwd {name} >/dev/null 2>&1 || useradd {system}-g {group} "
        f"-d {home} -s /sbin/nologin -c {comment} {name}\n"
        "else\n"
        f"  echo {missing} >&2\n"
        "fi\n"
    )


def escape(value: str) -> str:
    return value.replace("%", "%%")


def description(text: str) -> str:
    # A line starting with % would be read as a section header even when escaped as %%.
    return "\n".join(" " + line if line.lstrip().startswith("%") else line
                     for line in escape(text).splitlines())


def spec_text(manifest: Manifest, provenance: Provenance, script_files: dict[str, str]) -> str:
    """The spec for rpmbuild; `script_files` maps a scriptlet to its file in %_builddir."""
    tags = [("Name", manifest.name), ("Version", manifest.rpm_version),
            ("Release", manifest.iteration),
            ("Epoch", None if manifest.epoch is None else str(manifest.epoch)),
            ("Summary", manifest.summary),
            ("License", manifest.license), ("URL", manifest.url), ("Vendor", manifest.vendor),
            ("Packager", manifest.maintainer), *provenance.tags()]
    lines = [f"{tag}: {escape(value)}" for tag, value in tags if value]
    if manifest.arch == "noarch":
        lines.append("BuildArch: noarch")
    lines.append("AutoReqProv: no")  # dependencies are declared in the manifest
    lines += [f"Requires: {dep}" for dep in manifest.depends]
    lines += [f"Provides: {dep}" for dep in manifest.provides]
    lines += [f"Conflicts: {dep}" for dep in manifest.conflicts]
    lines += [f"Obsoletes: {dep}" for dep in manifest.replaces]
    lines += ["", "%description", description(manifest.description), ""]
    lines += [f"%{key} -f {script_files[key]}" for key in SCRIPTLETS if key in script_files]
    lines += ["", "%files", "%defattr(-,root,root,-)"]
    lines += file_lines(manifest.entries)
    return "\n".join(lines) + "\n"


def file_lines(entries) -> list[str]:
    """The %files list. A directory `src` is listed as one recursive line with `%attr(-,…)`:
    the staged tree carries the modes (from disk, or the manifest's `mode`), and rpm walks it in
    C, names as they are, instead of parsing a line per file."""
    compact = _compact_trees(entries)
    names = _PathNames(entries)
    lines = []
    for entry in entries:
        if entry.tree in compact:
            if entry.dest == entry.tree:
                lines.append(f"%attr(-,{entry.owner},{entry.group}) {names.escaped(entry.dest)}")
            continue
        lines.append(_file_line(entry, names.escaped(entry.dest)))
    return lines


# Characters rpm's file list takes as they are; any other name goes through rpm's glob.
PLAIN_PATH = re.compile(r"^[A-Za-z0-9._+@,=:~/-]+$")


def rpm_path(path: str) -> str:
    """`path` as a %files entry that matches exactly that file.

    rpm splits the line on white space, expands macros, and globs an entry with glob characters
    (brace expansion included, which no escape turns off), first splitting the pattern again as
    a shell would. So the entry is made a glob (one letter in brackets), `* ? [ ] %` go in
    brackets, and characters that no bracket or escape carries through all of that (white space,
    braces, backslash, quotes) become `?`; `_PathNames` makes sure that matches only this file.
    """
    if PLAIN_PATH.match(path):
        return path
    out, forced = [], False
    for char in path:
        if char in "*?[]%":
            out.append(f"[{char}]")
        elif char in "{}\\\"'" or char.isspace():
            out.append("?")
        elif not forced and char.isalnum():
            out.append(f"[{char}]")
            forced = True
        else:
            out.append(char)
    return "".join(out)


class _PathNames:
    """Escapes paths for the file list and refuses one whose `?` would match a sibling too."""

    def __init__(self, entries):
        self.entries = entries
        self.siblings: dict[str, list[str]] | None = None

    def escaped(self, path: str) -> str:
        text = rpm_path(path)
        if "?" in text.replace("[?]", ""):
            self._check(path, text)
        return text

    def _check(self, path: str, text: str) -> None:
        if self.siblings is None:
            self.siblings = {}
            for entry in self.entries:
                self.siblings.setdefault(entry.dest.rpartition("/")[0], []).append(entry.dest)
        pattern = re.compile(_glob_regex(text))
        for other in self.siblings.get(path.rpartition("/")[0], []):
            if other != path and pattern.fullmatch(other):
                raise KilnError(f"{path!r} and {other!r}: rpm's file list cannot tell these "
                                "names apart (they differ only in white space, braces, quotes "
                                "or backslashes)")


def _glob_regex(text: str) -> str:
    parts = re.findall(r"\[.\]|\?|.", text)
    return "".join("[^/]" if part == "?" else re.escape(part[1] if len(part) == 3 else part)
                   for part in parts)


def _compact_trees(entries) -> set[str]:
    """Trees that hold nothing but their own entries (else rpm would list a path twice), and
    no config files: `%config` on a directory line would flag its directories too, where fpm
    flags only the files."""
    roots = {entry.tree for entry in entries if entry.tree}
    roots -= {entry.tree for entry in entries if entry.kind == "config"}
    return {root for root in roots
            if all(entry.tree == root for entry in entries
                   if entry.dest == root or entry.dest.startswith(root + "/"))}


def _file_line(entry, path: str) -> str:
    if entry.kind == "link":  # a symlink's mode is always 0777
        return f"%attr(-,{entry.owner},{entry.group}) {path}"
    attr = f"%attr({entry.mode:04o},{entry.owner},{entry.group})"
    if entry.kind == "dir":
        return f"%dir {attr} {path}"
    if entry.kind == "config":
        return f"%config(noreplace) {attr} {path}"
    return f"{attr} {path}"
