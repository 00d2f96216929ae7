"""The package manifest: a YAML file in fpm's vocabulary, loaded and checked before anything builds.

`load(path, version=None)` returns a `Manifest` whose entries (files, config files, directories and
the generated systemd unit) are fully expanded, with modes and owners settled, so both backends
build from the same list. Every problem is one KilnError line: `file:line: key: what is wrong`.
"""

from __future__ import annotations

import difflib
import errno
import fnmatch
import hashlib
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import semver
import yaml

from cloud.errors import KilnError

KEYS = ("name", "version", "iteration", "epoch", "arch", "summary", "description", "license",
        "url", "maintainer", "vendor", "depends", "provides", "conflicts", "replaces", "user",
        "files", "config_files", "directories", "exclude", "service", "scripts")
REQUIRED = ("name", "summary", "license")
ENTRY_KEYS = ("src", "dest", "mode", "owner", "group", "exclude")
DIRECTORY_KEYS = ("path", "mode", "owner", "group")
USER_KEYS = ("name", "group", "home", "system")
SERVICE_KEYS = ("exec", "user", "environment", "restart")
SCRIPT_KEYS = ("before_install", "after_install", "before_upgrade", "after_upgrade",
               "before_remove", "after_remove")
ARCHES = ("noarch", "x86_64", "aarch64", "auto")
# fpm's own options (long names, `-` as `_`) that a manifest key might be copied from: refused
# as "not supported" rather than matched to a similar Kiln key that means something else.
FPM_OPTIONS = frozenset("""
    after_install after_remove after_upgrade architecture before_install before_remove
    before_upgrade category chdir config_files conflicts depends description directories edit
    epoch exclude exclude_file force fpm_options_file inputs iteration license log maintainer
    name no_auto_depends no_depends package package_name_suffix prefix provides replaces
    source_date_epoch_default source_date_epoch_from_changelog template_scripts template_value
    url vendor verbose version workdir input_type output_type
    rpm_attr rpm_auto_add_directories rpm_auto_add_exclude_directories rpm_autoprov rpm_autoreq
    rpm_autoreqprov rpm_changelog rpm_compression rpm_compression_level rpm_defattrdir
    rpm_defattrfile rpm_digest rpm_dist rpm_filter_from_provides rpm_filter_from_requires
    rpm_group rpm_ignore_iteration_in_dependencies rpm_init rpm_macro_expansion rpm_os
    rpm_posttrans rpm_pretrans rpm_rpmbuild_define rpm_sign rpm_summary rpm_tag
    rpm_trigger_after_install rpm_trigger_after_target_uninstall rpm_trigger_before_install
    rpm_trigger_before_uninstall rpm_use_file_permissions rpm_user rpm_verifyscript
    """.split())  # noqa: SIM905 - a word list reads better than 80 quoted strings
# ELF e_machine values and the rpm arch they build for.
ELF_MACHINES = {62: "x86_64", 183: "aarch64"}
RESTARTS = ("no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
ACCOUNT = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
RELEASE = re.compile(r"^[A-Za-z0-9._+]+$")
# rpm refuses control characters in file names (the spec's file list is line-based).
BAD_PATH_CHARS = re.compile(r"[\x00-\x1f\x7f]")
DEPENDENCY = re.compile(
    r"^(?P<name>[A-Za-z0-9_/][A-Za-z0-9._+/()-]*)"
    r"(?:\s*(?P<op><=|>=|=|<|>)\s*(?P<version>[A-Za-z0-9._+~^:-]+))?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
UNIT_DIR = "/usr/lib/systemd/system"
BIG_FILE = 1 << 20  # bytes: files this large are hashed in worker threads


@dataclass(frozen=True)
class Entry:
    """One path in the package: a file (from `src` or generated `content`) or a directory."""

    dest: str
    kind: str  # file | config | dir | link
    mode: int
    owner: str = "root"
    group: str = "root"
    src: Path | None = None
    content: bytes | None = None
    target: str | None = None  # a link's target, as read from disk
    # The dest of the directory `src` this came from, when its modes follow the source files:
    # the spec can then list the whole tree in one line (see packager.spec).
    tree: str | None = None
    # The source's stat when the manifest was loaded: staging and hashing need no second one.
    src_stat: os.stat_result | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class User:
    name: str
    group: str
    home: str
    system: bool = True


@dataclass
class Manifest:
    path: Path
    name: str
    version: str
    rpm_version: str
    iteration: str
    arch: str
    summary: str
    description: str
    license: str
    epoch: int | None = None
    url: str | None = None
    maintainer: str | None = None
    vendor: str | None = None
    depends: list[str] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    replaces: list[str] = field(default_factory=list)
    user: User | None = None
    entries: list[Entry] = field(default_factory=list)
    scripts: dict[str, str] = field(default_factory=dict)  # before_install, … → text
    service_unit: str | None = None
    digest: str = ""
    text: bytes = field(default=b"", repr=False)

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.rpm_version}-{self.iteration}.{self.arch}.rpm"


def rpm_version(version: str) -> str:
    """A semver string as an rpm Version that sorts the same way in rpm.

    The pre-release goes after `~`, which rpm sorts before the plain version (2.0.0~rc.1 <
    2.0.0). Build metadata stays after `+`, legal in rpm versions; semver gives it no order, rpm
    sorts it after the plain version. `-` inside identifiers becomes `_` (rpm forbids `-`).
    """
    parsed = semver.Version.parse(version)
    text = f"{parsed.major}.{parsed.minor}.{parsed.patch}"
    if parsed.prerelease:
        text += "~" + parsed.prerelease.replace("-", "_")
    if parsed.build:
        text += "+" + parsed.build.replace("-", "_")
    return text


# -- YAML with line numbers ------------------------------------------------------------------


class Node(dict):
    """A YAML mapping that remembers where each key sits and the raw text of scalar values."""

    line: int = 0

    def __init__(self):
        super().__init__()
        self.lines: dict[Any, int] = {}
        self.raw: dict[Any, str] = {}
        self.styles: dict[Any, str | None] = {}  # "|" or ">" for a YAML block scalar


class Items(list):
    line: int = 0

    def __init__(self):
        super().__init__()
        self.lines: list[int] = []


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Node:
    loader.flatten_mapping(node)
    result = Node()
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in result:
            raise _Problem(line, str(key), "appears twice")
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = line
        if isinstance(value_node, yaml.ScalarNode):
            result.raw[key] = value_node.value
            result.styles[key] = value_node.style
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> Items:
    result = Items()
    result.line = node.start_mark.line + 1
    for item in node.value:
        result.append(loader.construct_object(item, deep=True))
        result.lines.append(item.start_mark.line + 1)
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


class _Problem(Exception):
    """A problem at a line and key of the manifest, turned into a KilnError by load()."""

    def __init__(self, line: int | None, key: str, message: str):
        super().__init__(message)
        self.line, self.key, self.message = line, key, message


# -- loading ---------------------------------------------------------------------------------


def load(path: str | os.PathLike, version: str | None = None, digest: bool = True,
         iteration: str | None = None) -> Manifest:
    """Read, check and expand the manifest at `path`; `version` and `iteration` override its own
    (`invoke package/bake --version V --iteration N`).

    With digest=False, `.digest` stays empty until `compute_digest(manifest)` is called (the
    builder hashes while it stages files).
    """
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as error:
        raise KilnError(f"{path}: cannot read the manifest ({error.strerror})") from None
    try:
        manifest = _build(path, text, version, iteration)
    except _Problem as problem:
        where = f"{path}:{problem.line}" if problem.line else str(path)
        raise KilnError(f"{where}: {problem.key}: {problem.message}") from None
    except RecursionError:
        raise KilnError(f"{path}: not valid YAML (nested deeper than Kiln reads)") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        reason = getattr(error, "problem", None) or str(error)
        raise KilnError(f"{where}: not valid YAML ({reason})") from None
    if digest:
        compute_digest(manifest)
    return manifest


def compute_digest(manifest: Manifest, known: Any = None) -> str:
    """Set and return `manifest.digest`: sha256 of the manifest and all it packages.

    `known`, when given, remembers files' sha256 between builds: `known.get(entry)` returns a
    recorded hex digest or None, `known.put(entry, hexdigest)` records a fresh one.
    """
    manifest.digest = _digest(manifest.text, manifest, known)
    return manifest.digest


def _build(path: Path, text: bytes, version: str | None, iteration: str | None = None) -> Manifest:
    data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(data, Node):
        raise _Problem(None, "(top)", "expected a mapping of manifest keys")
    _check_keys(data, KEYS, "")
    for key in REQUIRED:
        if key not in data:
            raise _Problem(data.line, key, "missing (required)")
    folder = path.resolve().parent
    name = _name(data, "name")
    semver_text = _version(data, version)
    manifest = Manifest(
        path=path,
        name=name,
        version=semver_text,
        rpm_version=rpm_version(semver_text),
        iteration=_iteration(data, iteration),
        epoch=_epoch(data),
        arch=_choice(data, "arch", ARCHES, "noarch"),
        summary=_line(data, "summary"),
        description=_text(data, "description") or _line(data, "summary"),
        license=_line(data, "license"),
        url=_optional_line(data, "url"),
        maintainer=_optional_line(data, "maintainer"),
        vendor=_optional_line(data, "vendor"),
        depends=_dependencies(data, "depends"),
        provides=_dependencies(data, "provides"),
        conflicts=_dependencies(data, "conflicts"),
        replaces=_dependencies(data, "replaces"),
        user=_user(data.get("user"), data),
    )
    excludes = _globs(data, "exclude")
    entries = _files(data, "files", "file", folder, excludes)
    entries += _files(data, "config_files", "config", folder, excludes)
    entries += _directories(data)
    if "service" in data:
        manifest.service_unit = _service(data["service"], data, manifest)
        entries.append(Entry(dest=f"{UNIT_DIR}/{name}.service", kind="file", mode=0o644,
                             content=manifest.service_unit.encode()))
    manifest.entries = _unique(entries, data)
    manifest.scripts = _scripts(data, folder)
    manifest.text = text
    _check_arch(manifest, data)
    return manifest


def _check_keys(node: Node, allowed: tuple[str, ...] | dict, prefix: str) -> None:
    for key in node:
        if key not in allowed and not prefix and str(key).replace("-", "_") in FPM_OPTIONS:
            raise _Problem(node.lines.get(key), str(key),
                           "is an fpm option Kiln does not support (see README: Manifest)")
        if key not in allowed:
            match = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f" (did you mean {match[0]!r}?)" if match else ""
            raise _Problem(node.lines.get(key), f"{prefix}{key}", f"unknown key{hint}")


def _at(node: Node, key: str) -> int | None:
    return node.lines.get(key, node.line)


def _name(node: Node, key: str, label: str | None = None) -> str:
    value = node.get(key)
    if not isinstance(value, str) or not NAME.match(value):
        raise _Problem(_at(node, key), label or key,
                       f"{value!r} is not a valid package name (letters, digits, . _ + -)")
    return value


def _version(node: Node, override: str | None) -> str:
    if override is not None:
        if not semver.Version.is_valid(override):
            raise _Problem(None, "--version", f"{override!r} is not a semantic version (X.Y.Z)")
        return override
    if "version" not in node:
        raise _Problem(node.line, "version", "missing (set it here or pass --version)")
    raw = node.raw.get("version", str(node["version"]))
    if not semver.Version.is_valid(raw):
        raise _Problem(_at(node, "version"), "version",
                       f"{raw!r} is not a semantic version (X.Y.Z, e.g. 1.4.2 or 2.0.0-rc.1)")
    return raw


def _iteration(node: Node, override: str | None = None) -> str:
    raw = node.raw.get("iteration", "1") if "iteration" in node else "1"
    if override is not None:
        raw = str(override)
    if not RELEASE.match(raw) or raw.startswith("0") and raw.isdigit():
        where = (None, "--iteration") if override is not None else (_at(node, "iteration"),
                                                                     "iteration")
        raise _Problem(*where,
                       f"{raw!r} is not a valid release (e.g. 1, 2, 1.el9)")
    return raw


def _epoch(node: Node) -> int | None:
    if "epoch" not in node:
        return None
    value = node["epoch"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Problem(_at(node, "epoch"), "epoch", f"{value!r} is not a whole number (rpm Epoch)")
    return value


def _globs(node: Node, key: str, label: str | None = None) -> list[str]:
    items = _list(node, key)
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise _Problem(items.lines[index], f"{label or key}[{index}]",
                           "expected a glob such as '*.pyc' or 'tests/*'")
    return [item.strip().strip("/") for item in items]


def _choice(node: Node, key: str, choices: tuple[str, ...], default: str,
            label: str | None = None) -> str:
    value = node.get(key, default)
    if value not in choices:
        raise _Problem(_at(node, key), label or key,
                       f"{value!r} is not one of {', '.join(choices)}")
    return value


def _line(node: Node, key: str, label: str | None = None) -> str:
    value = node.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = node.raw.get(key, str(value))
    if not isinstance(value, str) or not value.strip():
        raise _Problem(_at(node, key), label or key, "expected a non-empty string")
    if "\n" in value.strip() or "\r" in value:
        raise _Problem(_at(node, key), label or key, "must be a single line")
    return value.strip()


def _optional_line(node: Node, key: str) -> str | None:
    return _line(node, key) if node.get(key) is not None else None


def _text(node: Node, key: str) -> str | None:
    value = node.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _Problem(_at(node, key), key, "expected non-empty text")
    return value.strip("\n")


def _list(node: Node, key: str) -> Items:
    value = node.get(key)
    if value is None:
        return Items()
    if not isinstance(value, Items):
        raise _Problem(_at(node, key), key, "expected a list")
    return value


def _dependencies(node: Node, key: str) -> list[str]:
    result = []
    items = _list(node, key)
    for index, item in enumerate(items):
        match = DEPENDENCY.match(item.strip()) if isinstance(item, str) else None
        if not match:
            raise _Problem(items.lines[index], f"{key}[{index}]",
                           f"{item!r} is not a dependency ('name' or 'name >= 1.2')")
        name, op, version = match.group("name", "op", "version")
        result.append(f"{name} {op} {version}" if op else name)
    return result


def _account(node: Node, key: str, label: str, default: str = "root") -> str:
    value = node.get(key, default)
    if not isinstance(value, str) or not ACCOUNT.match(value):
        raise _Problem(_at(node, key), label, f"{value!r} is not a valid user or group name")
    return value


def _user(value: Any, top: Node) -> User | None:
    if value is None:
        return None
    if not isinstance(value, Node):
        raise _Problem(_at(top, "user"), "user", "expected a mapping (name, group, home, system)")
    _check_keys(value, USER_KEYS, "user.")
    if "name" not in value:
        raise _Problem(value.line, "user.name", "missing (required)")
    name = _account(value, "name", "user.name")
    group = _account(value, "group", "user.group", default=name)
    home = value.get("home", "/")
    if not isinstance(home, str):
        raise _Problem(_at(value, "home"), "user.home", "expected an absolute path")
    _dest(home, _at(value, "home"), "user.home")
    system = value.get("system", True)
    if not isinstance(system, bool):
        raise _Problem(_at(value, "system"), "user.system", "expected true or false")
    return User(name=name, group=group, home=home, system=system)


def _dest(value: Any, line: int | None, label: str) -> str:
    """An absolute path; one trailing slash is allowed (the caller decides what it means)."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise _Problem(line, label, f"{value!r} must be an absolute path")
    parts = value.rstrip("/").split("/")[1:]
    if value.rstrip("/") == "":
        raise _Problem(line, label, f"{value!r} is the root directory, not a path in it")
    if "" in parts:
        raise _Problem(line, label, f"{value!r} has an empty path component (//)")
    if "." in parts or ".." in parts:
        raise _Problem(line, label, f"{value!r} must not contain . or .. components")
    _name_chars(value, line, label)
    return value


def _name_chars(path: str, line: int | None, label: str) -> None:
    if BAD_PATH_CHARS.search(path):
        raise _Problem(line, label, f"{path!r} has a control character (tab, newline, …), "
                       "which rpm refuses in file names")


def _mode(node: Node, key: str, label: str) -> int | None:
    if key not in node:
        return None
    raw = node.raw.get(key, str(node[key])).removeprefix("0o")
    if not re.fullmatch(r"[0-7]{3,4}", raw):
        raise _Problem(_at(node, key), label, f"{raw!r} is not an octal mode such as 0644")
    return int(raw, 8)


def _inside(src: Path, folder: Path, line: int | None, label: str) -> Path:
    """The real path of `src`, refused when it (or a symlink on the way) leaves `folder`."""
    real = src.resolve()
    if not real.is_relative_to(folder):
        raise _Problem(line, label, f"{src} is outside the manifest's folder {folder}")
    return real


def _files(top: Node, key: str, kind: str, folder: Path, excludes: list[str]) -> list[Entry]:
    entries: list[Entry] = []
    items = _list(top, key)
    for index, item in enumerate(items):
        label = f"{key}[{index}]"
        if not isinstance(item, Node):
            raise _Problem(items.lines[index], label, "expected a mapping (src, dest, …)")
        _check_keys(item, ENTRY_KEYS, f"{label}.")
        for required in ("src", "dest"):
            if required not in item:
                raise _Problem(item.line, f"{label}.{required}", "missing (required)")
        src_text = item["src"]
        if not isinstance(src_text, str) or not src_text:
            raise _Problem(_at(item, "src"), f"{label}.src", "expected a relative path")
        dest = _dest(item["dest"], _at(item, "dest"), f"{label}.dest")
        src = folder / src_text
        line = _at(item, "src")
        if not os.path.lexists(src):
            raise _Problem(line, f"{label}.src", f"{src_text!r} does not exist in {folder}")
        real = _inside(src, folder, line, f"{label}.src")
        dest = _placed(dest, src_text, real)
        attrs = {"mode": _mode(item, "mode", f"{label}.mode"),
                 "owner": _account(item, "owner", f"{label}.owner"),
                 "group": _account(item, "group", f"{label}.group"), "tree": dest,
                 "exclude": excludes + _globs(item, "exclude", f"{label}.exclude"),
                 "line": line, "label": label, "folder": folder}
        if real.is_dir():
            entries += _tree(real, dest, kind, attrs)
        elif os.path.isfile(real):
            entries.append(_file_entry(real, dest, kind, {**attrs, "tree": None}))
        else:
            raise _Problem(line, f"{label}.src", f"{src_text!r} is neither a regular file "
                           "nor a directory")
    return entries


def _placed(dest: str, src_text: str, real: Path) -> str:
    """fpm's (and rsync's) trailing-slash rule: `dest: /opt/x/` puts `src` inside /opt/x,
    unless `src` names a directory's contents (`app/`); without the slash, dest is src's path."""
    if not dest.endswith("/"):
        return dest
    if real.is_dir() and src_text.endswith("/"):
        return dest.rstrip("/")
    return f"{dest.rstrip('/')}/{real.name}"


def _file_entry(real: Path, dest: str, kind: str, attrs: dict,
                info: os.stat_result | None = None) -> Entry:
    """A file: its mode from disk (as fpm keeps it) unless the manifest sets one."""
    info = real.stat() if info is None else info
    mode = attrs["mode"]
    if mode is None:
        mode = stat.S_IMODE(info.st_mode)
    return Entry(dest=dest, kind=kind, mode=mode, owner=attrs["owner"], group=attrs["group"],
                 src=real, tree=attrs.get("tree"), src_stat=info)


def _tree(root: Path, dest: str, kind: str, attrs: dict, rel: str = "") -> list[Entry]:
    """A source directory, recursively: its directories (empty ones too) owned by the package,
    its files, and its symlinks as symlinks (never followed: a link to a directory is one
    entry, and a loop is just a link). Modes come from disk, a manifest `mode` sets files'.
    """
    entries = [Entry(dest=dest, kind="dir", mode=stat.S_IMODE(os.stat(root).st_mode),
                     owner=attrs["owner"], group=attrs["group"], tree=attrs["tree"])]
    with os.scandir(root) as scan:
        children = sorted(scan, key=lambda item: item.name)
    excludes = attrs["exclude"]
    for item in children:  # runs once per packaged file: the error label is built on error only
        source = root / item.name  # cheaper than parsing item.path again
        target = f"{dest}/{item.name}"
        if excludes and _excluded(f"{rel}{item.name}", target, excludes):
            continue
        if BAD_PATH_CHARS.search(item.name):
            _name_chars(target, attrs["line"], _shown(attrs, source))
        info = item.stat(follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            _not_a_loop(source, attrs)
            entries.append(Entry(dest=target, kind="link", mode=0o777, owner=attrs["owner"],
                                 group=attrs["group"], target=os.readlink(source),
                                 tree=attrs["tree"], src_stat=info))
        elif stat.S_ISDIR(info.st_mode):
            entries += _tree(source, target, kind, attrs, f"{rel}{item.name}/")
        elif stat.S_ISREG(info.st_mode):
            entries.append(_file_entry(source, target, kind, attrs, info))
        else:
            raise _Problem(attrs["line"], _shown(attrs, source),
                           "is neither a regular file, a directory nor a symlink")
    return entries


def _not_a_loop(link: Path, attrs: dict) -> None:
    """rpmbuild classifies every file it packages and fails on a link that resolves to itself."""
    try:
        os.stat(link)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise _Problem(attrs["line"], _shown(attrs, link),
                           f"is a symlink loop (-> {os.readlink(link)}), which rpmbuild "
                           "cannot package") from None


def _excluded(relative: str, dest: str, globs: list[str]) -> bool:
    """fpm's --exclude: a glob against the path inside the tree or the installed path."""
    installed = dest.lstrip("/")
    return any(fnmatch.fnmatchcase(relative, glob) or fnmatch.fnmatchcase(installed, glob)
               for glob in globs)


def _shown(attrs: dict, path: Path) -> str:
    return f"{attrs['label']}.src ({path.relative_to(attrs['folder'])})"


def _directories(top: Node) -> list[Entry]:
    entries = []
    items = _list(top, "directories")
    for index, item in enumerate(items):
        label = f"directories[{index}]"
        if isinstance(item, str):
            item_node, path_line = Node(), items.lines[index]
            item_node["path"] = item
        elif isinstance(item, Node):
            _check_keys(item, DIRECTORY_KEYS, f"{label}.")
            item_node, path_line = item, _at(item, "path")
        else:
            raise _Problem(items.lines[index], label, "expected a path or a mapping with path")
        dest = _dest(item_node.get("path"), path_line, f"{label}.path")
        entries.append(Entry(dest=dest, kind="dir",
                             mode=_mode(item_node, "mode", f"{label}.mode") or 0o755,
                             owner=_account(item_node, "owner", f"{label}.owner"),
                             group=_account(item_node, "group", f"{label}.group")))
    return entries


def _unique(entries: list[Entry], top: Node) -> list[Entry]:
    seen: dict[str, Entry] = {}
    for entry in entries:
        if entry.dest in seen:
            raise _Problem(top.line, entry.dest, "is listed twice (files, config_files, "
                           "directories or the generated service unit)")
        seen[entry.dest] = entry
    return sorted(entries, key=lambda e: e.dest)


def _service(value: Any, top: Node, manifest: Manifest) -> str:
    """The systemd unit for `service`, generated here so every backend ships the same bytes."""
    if not isinstance(value, Node):
        raise _Problem(_at(top, "service"), "service", "expected a mapping (exec, user, …)")
    _check_keys(value, SERVICE_KEYS, "service.")
    command = _line(value, "exec", "service.exec") if "exec" in value else None
    if command is None or not command.startswith("/"):
        raise _Problem(_at(value, "exec"), "service.exec",
                       "expected a command line starting with an absolute path")
    default_user = manifest.user.name if manifest.user else "root"
    user = _account(value, "user", "service.user", default=default_user)
    restart = _choice(value, "restart", RESTARTS, "on-failure", "service.restart")
    lines = ["[Unit]", f"Description={manifest.summary.replace('%', '%%')}",
             "After=network-online.target", "Wants=network-online.target", "",
             "[Service]", "Type=simple", f"User={user}"]
    if manifest.user and user == manifest.user.name:
        lines.append(f"Group={manifest.user.group}")
    lines += [f"Environment={_environment(name, text)}"
              for name, text in _environment_items(value)]
    lines += [f"ExecStart={command.replace('%', '%%')}", f"Restart={restart}", "RestartSec=2",
              "", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def _environment_items(service: Node) -> list[tuple[str, str]]:
    env = service.get("environment")
    if env is None:
        return []
    if not isinstance(env, Node):
        raise _Problem(_at(service, "environment"), "service.environment",
                       "expected a mapping of NAME: value")
    items = []
    for name in env:
        label = f"service.environment.{name}"
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise _Problem(env.lines.get(name), label, "is not a valid variable name")
        text = env.raw.get(name) if name in env.raw and env[name] is not None else None
        if text is None or isinstance(env[name], Node | Items) or "\n" in text:
            raise _Problem(env.lines.get(name), label, "expected a single-line value")
        items.append((name, text))
    return sorted(items)


def _environment(name: str, text: str) -> str:
    # systemd: double quotes group the assignment, backslash escapes, % starts a specifier.
    quoted = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{name}={quoted}"'


def _scripts(top: Node, folder: Path) -> dict[str, str]:
    value = top.get("scripts")
    if value is None:
        return {}
    if not isinstance(value, Node):
        raise _Problem(_at(top, "scripts"), "scripts", "expected a mapping (after_install, …)")
    _check_keys(value, SCRIPT_KEYS, "scripts.")
    result = {}
    for key, text in value.items():
        label, line = f"scripts.{key}", _at(value, key)
        if not isinstance(text, str) or not text.strip():
            raise _Problem(line, label, "expected a file path or inline script text")
        block = value.styles.get(key) in ("|", ">")
        result[key] = _script_text(text, block, folder, line, label)
    return result


def _script_text(text: str, block: bool, folder: Path, line: int | None, label: str) -> str:
    """A YAML block (`key: |`) is the script itself, even one line long; a plain or quoted
    scalar is a path next to the manifest."""
    if block:
        return text.rstrip("\n") + "\n"
    path = folder / text.strip()
    if not path.is_file():
        raise _Problem(line, label, f"{text.strip()!r} is not a file in {folder} "
                       "(inline scripts need a YAML block: `key: |`)")
    real = _inside(path, folder, line, label)
    return real.read_text().rstrip("\n") + "\n"


def _check_arch(manifest: Manifest, top: Node) -> None:
    """`arch: auto` takes the ELF files' machine (noarch without any); mixed machines fail."""
    if manifest.arch != "auto":
        return
    found = elf_files(manifest.entries)
    machines = sorted({arch for _, arch in found})
    if len(machines) > 1:
        raise _Problem(_at(top, "arch"), "arch", f"auto: ELF files for {' and '.join(machines)} "
                       f"({found[0][0].dest}, …): one package holds one architecture")
    manifest.arch = machines[0] if machines else "noarch"


def elf_machine(path: Path) -> str | None:
    """The rpm arch of an ELF file (`?` for a machine rpm arch names here do not cover), or
    None when `path` is not ELF."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    order = "little" if head[5] == 1 else "big"
    machine = int.from_bytes(head[18:20], order)
    return ELF_MACHINES.get(machine, f"ELF machine {machine}")


def elf_files(entries: list[Entry]) -> list[tuple[Entry, str]]:
    """The packaged ELF files and their arch, in dest order."""
    found = []
    for entry in entries:
        if entry.src is not None and entry.src_stat and entry.src_stat.st_size >= 20:
            arch = elf_machine(entry.src)
            if arch:
                found.append((entry, arch))
    return found


def _digest(text: bytes, manifest: Manifest, known: Any = None) -> str:
    """sha256 over the manifest text, every entry's attributes and every file's content."""
    contents = _contents_sha256([e for e in manifest.entries if e.src is not None], known)
    digest = hashlib.sha256(text)
    for entry in manifest.entries:
        content = contents[entry.dest] if entry.src else _sha256(entry.content or b"")
        header = (f"\0{entry.kind}\0{entry.dest}\0{entry.mode:o}\0{entry.owner}\0{entry.group}"
                  f"\0{entry.target or ''}\0")
        digest.update(header.encode())
        digest.update(content.encode() if entry.kind != "dir" else b"")
    for key in sorted(manifest.scripts):
        digest.update(f"\0script\0{key}\0{manifest.scripts[key]}".encode())
    return digest.hexdigest()


def _contents_sha256(entries: list[Entry], known: Any) -> dict[str, str]:
    """Each file's sha256 by dest: recorded ones from `known`; big files hash in worker threads
    (hashlib releases the GIL) while small ones hash here."""
    contents = {}
    if known is not None:
        contents = {entry.dest: digest for entry in entries
                    if (digest := known.get(entry)) is not None}
    missing = [entry for entry in entries if entry.dest not in contents]
    big = [entry for entry in missing if _size(entry) >= BIG_FILE]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        pending = {entry.dest: pool.submit(_file_sha256, entry.src) for entry in big}
        for entry in missing:
            if entry.dest not in pending:
                with open(entry.src, "rb") as handle:
                    contents[entry.dest] = _sha256(handle.read())
        contents.update({dest: future.result() for dest, future in pending.items()})
    if known is not None:
        for entry in missing:
            known.put(entry, contents[entry.dest])
    return contents


def _size(entry: Entry) -> int:
    return entry.src_stat.st_size if entry.src_stat else entry.src.stat().st_size


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
