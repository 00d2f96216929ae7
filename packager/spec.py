"""What both backends share: the scriptlets, the payload settings, and the rpmbuild spec text.

Every manifest value that reaches a spec is escaped here: `%` becomes `%%` (rpm expands macros in
tags, descriptions and scriptlets), a description line that would read as a section header gets a
leading space, and single-line tags were already refused with newlines by the manifest loader.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    result = {}
    for key in SCRIPTLETS:
        parts = generated[key] + ([manifest.scripts[key]] if key in manifest.scripts else [])
        if parts:
            result[key] = "\n".join(parts)
    return result


def _account_script(manifest: Manifest) -> str:
    user = manifest.user
    system = "-r " if user.system else ""
    comment = f"{manifest.name} service account"
    # Guarded so an installroot without shadow-utils still installs; a real host always has it.
    return (
        "if command -v useradd >/dev/null 2>&1; then\n"
        f"  getent group {user.group} >/dev/null 2>&1 || groupadd {system}{user.group}\n"
        f"  getent passwd {user.name} >/dev/null 2>&1 || useradd {system}-g {user.group} "
        f"-d {user.home} -s /sbin/nologin -c '{comment}' {user.name}\n"
        "else\n"
        f"  echo '{manifest.name}: useradd not found, account {user.name} not created' >&2\n"
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
            ("Release", manifest.iteration), ("Summary", manifest.summary),
            ("License", manifest.license), ("URL", manifest.url), ("Vendor", manifest.vendor),
            ("Packager", manifest.maintainer), *provenance.tags()]
    lines = [f"{tag}: {escape(value)}" for tag, value in tags if value]
    if manifest.arch == "noarch":
        lines.append("BuildArch: noarch")
    lines.append("AutoReqProv: no")  # dependencies are declared in the manifest
    lines += [f"Requires: {dep}" for dep in manifest.depends]
    lines += [f"Provides: {dep}" for dep in manifest.provides]
    lines += [f"Conflicts: {dep}" for dep in manifest.conflicts]
    lines += ["", "%description", description(manifest.description), ""]
    lines += [f"%{key} -f {script_files[key]}" for key in SCRIPTLETS if key in script_files]
    lines += ["", "%files", "%defattr(-,root,root,-)"]
    lines += file_lines(manifest.entries)
    return "\n".join(lines) + "\n"


def file_lines(entries) -> list[str]:
    """The %files list. A directory `src` whose modes follow its files (no `mode` in the
    manifest) is listed as one recursive line with `%attr(-,…)`: the staged tree carries the
    modes, and rpm walks it in C instead of parsing a line per file."""
    compact = _compact_trees(entries)
    lines = []
    for entry in entries:
        if entry.tree in compact:
            if entry.dest == entry.tree:
                config = "%config(noreplace) " if entry.kind == "config" or any(
                    e.kind == "config" for e in entries if e.tree == entry.tree) else ""
                lines.append(f"{config}%attr(-,{entry.owner},{entry.group}) {entry.dest}")
            continue
        lines.append(_file_line(entry))
    return lines


def _compact_trees(entries) -> set[str]:
    """Trees that hold nothing but their own entries (else rpm would list a path twice)."""
    roots = {entry.tree for entry in entries if entry.tree}
    return {root for root in roots
            if all(entry.tree == root for entry in entries
                   if entry.dest == root or entry.dest.startswith(root + "/"))}


def _file_line(entry) -> str:
    attr = f"%attr({entry.mode:04o},{entry.owner},{entry.group})"
    if entry.kind == "dir":
        return f"%dir {attr} {entry.dest}"
    if entry.kind == "config":
        return f"%config(noreplace) {attr} {entry.dest}"
    return f"{attr} {entry.dest}"
