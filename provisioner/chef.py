"""What chef-solo gets on the bake instance: node.json, solo.rb, the cookbooks and their digest.

    node_json(app, version, release, package, service, repo_baseurl, gpgkey_url, smoke_commands,
              rpm_version=None) -> dict
    solo_rb(staging_dir, chef_license="accept-no-persist", layout=Layout()) -> str
    Layout.of(bake, chef_dir) -> Layout           # Kiln's chef/ plus the team's cookbooks, roles…
    layout.digest() -> str                         # "sha256:<hex>", recorded on the image
    layout.archive(extra) -> bytes                 # all of it as a tar.gz, for the upload
    smoke_commands(templates, **values) -> list[str]
    to_rpm_version(version) -> str                # 2.0.0-rc.1 -> 2.0.0~rc.1

Smoke commands come from `kiln.bake.smoke_commands`: shell commands with `{app}`, `{version}`,
`{release}`, `{package}`, `{service}` and `{version_release}` (rpm's `%{VERSION}-%{RELEASE}`,
e.g. 2.0.0~rc.1-1) placeholders (write `{{`/`}}` for literal braces), each of which must exit 0
on the baked instance. The cookbook adds `systemctl is-active <service>` itself
when the manifest declares a service.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from cloud.errors import KilnError

RUN_LIST = ["recipe[kiln_app]"]
# Where each part goes in the staging directory (and in the digest's relative paths): Kiln's
# chef/ at the top as before, so a bake without a team part keeps the digest it had.
TEAM_COOKBOOKS = "team-cookbooks"
ROLES = "roles"
ENVIRONMENTS = "environments"
REPO_ID = "kiln"
# Files that are never part of a cookbook, wherever an editor or OS leaves them.
IGNORED_NAMES = {".DS_Store", "__pycache__", ".git"}
IGNORED_SUFFIXES = (".swp", "~", ".pyc")


def to_rpm_version(version: str) -> str:
    """The RPM spelling of a semver version: a pre-release sorts first with `~` (2.0.0~rc.1)."""
    core, plus, build = version.partition("+")
    core = core.replace("-", "~", 1)
    return f"{core}{'+' + build if plus else ''}"


def node_json(app: str, version: str, release: str, package: str, service: str | None,
              repo_baseurl: str, gpgkey_url: str, smoke_commands: list[str],
              rpm_version: str | None = None, gpgkey_fingerprint: str | None = None,
              run_list: list[str] | None = None, attributes: dict | None = None) -> dict:
    """The attributes of the one chef-solo run; `package` is the RPM's name.

    `rpm_version` defaults to the RPM spelling of `version`; `run_list` to Kiln's recipe alone;
    `attributes` (kiln.bake.attributes) are the team's normal attributes beside `kiln_app`.
    """
    for field, value in (("app", app), ("version", version), ("release", release),
                         ("package", package), ("repo_baseurl", repo_baseurl),
                         ("gpgkey_url", gpgkey_url)):
        if not value:
            raise KilnError(f"node.json: {field} is empty")
    evr = f"{rpm_version or to_rpm_version(version)}-{release}"
    return {
        **(attributes or {}),
        "run_list": list(run_list or RUN_LIST),
        "kiln_app": {
            "name": app,
            "version": version,
            "release": str(release),
            "package": f"{package}-{evr}",
            "service": service or None,
            "repo": {
                "id": REPO_ID,
                "name": f"Kiln {app}",
                "baseurl": repo_baseurl,
                "gpgkey": gpgkey_url,
                # The served key is trusted only with this fingerprint (the bucket is not).
                "gpgkey_fingerprint": gpgkey_fingerprint,
                "gpgcheck": True,
                "repo_gpgcheck": True,
            },
            "smoke": {"commands": list(smoke_commands)},
        },
    }


def smoke_commands(templates: list[str], **values: str | None) -> list[str]:
    """`kiln.bake.smoke_commands` with the release's values filled in."""
    filled = []
    for template in templates:
        try:
            filled.append(template.format(**{k: "" if v is None else v for k, v in values.items()}))
        except (KeyError, IndexError, ValueError) as error:
            known = ", ".join("{" + k + "}" for k in sorted(values))
            raise KilnError(f"kiln.bake.smoke_commands: {template!r}: bad placeholder {error} "
                            f"(known: {known}; write {{{{ and }}}} for literal braces)") from None
    return filled


def ruby_string(value: str) -> str:
    """A single-quoted Ruby string literal: only backslash and quote are special there."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Layout:
    """The folders a bake uploads for chef-solo: Kiln's chef/ and the team's cookbook folders,
    roles and environments (kiln.bake.cookbook_paths, roles_dir, environments_dir)."""

    chef_dir: Path | None = None
    cookbook_paths: tuple[Path, ...] = ()
    roles_dir: Path | None = None
    environments_dir: Path | None = None
    environment: str | None = None

    @classmethod
    def of(cls, bake, chef_dir: str | Path) -> Layout:
        """The layout kiln.bake describes (paths as settings resolved them)."""
        optional = {key: Path(bake.get(key)) if bake.get(key) else None
                    for key in ("roles_dir", "environments_dir")}
        return cls(Path(chef_dir), tuple(Path(p) for p in bake.get("cookbook_paths") or ()),
                   environment=bake.get("environment"), **optional)

    def cookbook_dirs(self) -> list[str]:
        """chef-solo's cookbook_path, relative to the staging directory: Kiln's first."""
        return ["cookbooks", *(f"{TEAM_COOKBOOKS}/{n}"
                               for n in range(1, len(self.cookbook_paths) + 1))]

    def members(self) -> list[tuple[str, Path]]:
        """(name in the staging directory, file) of everything uploaded, checked first."""
        self.check()
        found = cookbook_files(self.chef_dir) if self.chef_dir else []
        for number, folder in enumerate(self.cookbook_paths, 1):
            found += _under(f"{TEAM_COOKBOOKS}/{number}", folder, "kiln.bake.cookbook_paths")
        for name, folder, field in ((ROLES, self.roles_dir, "kiln.bake.roles_dir"),
                                    (ENVIRONMENTS, self.environments_dir,
                                     "kiln.bake.environments_dir")):
            if folder:
                found += _under(name, folder, field)
        return found

    def check(self) -> None:
        """The team's folders exist and no cookbook is in two of them (Kiln's kiln_app
        included): chef-solo would merge or pick one silently."""
        seen = {path.name: "Kiln's chef/cookbooks"
                for path in _cookbooks(self.chef_dir / "cookbooks")} if self.chef_dir else {}
        for folder in self.cookbook_paths:
            if not folder.is_dir():
                raise KilnError(f"kiln.bake.cookbook_paths: {folder} is not a folder")
            if (folder / "metadata.rb").is_file() or (folder / "metadata.json").is_file():
                raise KilnError(f"kiln.bake.cookbook_paths: {folder} is a cookbook; name the "
                                f"folder that holds it (as chef-solo's cookbook_path does)")
            for cookbook in _cookbooks(folder):
                if cookbook.name in seen:
                    raise KilnError(f"kiln.bake.cookbook_paths: cookbook {cookbook.name} is in "
                                    f"{folder} and in {seen[cookbook.name]}; rename one")
                seen[cookbook.name] = str(folder)
        for folder, field in ((self.roles_dir, "roles_dir"),
                              (self.environments_dir, "environments_dir")):
            if folder and not folder.is_dir():
                raise KilnError(f"kiln.bake.{field}: {folder} is not a folder")
        if self.environment and not self.environments_dir:
            raise KilnError(f"kiln.bake.environment: {self.environment} needs "
                            f"kiln.bake.environments_dir, the folder chef-solo reads it from")
        if self.environment and not any(
                (self.environments_dir / f"{self.environment}.{ext}").is_file()
                for ext in ("json", "rb")):
            raise KilnError(f"kiln.bake.environment: no {self.environment}.json or "
                            f"{self.environment}.rb in {self.environments_dir}")

    def check_roles(self, run_list: list[str]) -> None:
        """Each role[NAME] of the run list has its file in roles_dir."""
        for entry in run_list:
            if entry.startswith("role["):
                name = entry[5:-1]
                if not any((self.roles_dir / f"{name}.{ext}").is_file() for ext in ("json", "rb")):
                    raise KilnError(f"kiln.bake.run_list: {entry} has no {name}.json or "
                                    f"{name}.rb in {self.roles_dir} (kiln.bake.roles_dir)")

    def digest(self) -> str:
        return _digest(self.members())

    def archive(self, extra: dict[str, bytes] | None = None) -> bytes:
        return _archive(self.members(), extra)


def _cookbooks(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in IGNORED_NAMES) \
        if folder.is_dir() else []


def _under(prefix: str, folder: Path, field: str) -> list[tuple[str, Path]]:
    if not folder.is_dir():
        raise KilnError(f"{field}: {folder} is not a folder")
    return [(f"{prefix}/{relative}", path) for relative, path in cookbook_files(folder)]


def solo_rb(staging_dir: str, chef_license: str = "accept-no-persist",
            layout: Layout | None = None) -> str:
    """chef-solo's configuration; `staging_dir` is the absolute staging path on the instance."""
    if not staging_dir.startswith("/"):
        raise KilnError(f"solo.rb: staging directory {staging_dir!r} must be absolute")
    base = staging_dir.rstrip("/") or "/"
    layout = layout or Layout()

    def under(name: str) -> str:
        return ruby_string(f"{base}/{name}")

    team = []
    if layout.roles_dir:
        team.append(f"role_path {under(ROLES)}")
    if layout.environments_dir:
        team.append(f"environment_path {under(ENVIRONMENTS)}")
    if layout.environment:
        team.append(f"environment {ruby_string(layout.environment)}")
    return "\n".join([
        "# chef-solo configuration written by Kiln for one bake; paths are on the bake instance.",
        f"chef_repo_path {ruby_string(base)}",
        f"cookbook_path [{', '.join(under(d) for d in layout.cookbook_dirs())}]",
        *team,
        f"file_cache_path {under('cache')}",
        f"file_backup_path {under('backup')}",
        f"json_attribs {under('node.json')}",
        f"node_path {under('nodes')}",
        f"chef_license {ruby_string(chef_license)}",
        "log_location STDOUT",
        "log_level :info",
        "# The image must not remember this run: no node state reported anywhere.",
        "enable_reporting false",
        "",
    ])


def cookbook_files(chef_dir: str | Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, file) for every file of the chef folder, sorted by path."""
    root = Path(chef_dir)
    if not root.is_dir():
        raise KilnError(f"{root}: the chef folder does not exist")
    files = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(part in IGNORED_NAMES for part in relative.parts):
            continue
        if path.is_file() and not path.name.endswith(IGNORED_SUFFIXES):
            files.append((relative.as_posix(), path))
    return sorted(files)


def cookbook_digest(chef_dir: str | Path) -> str:
    """sha256 over every file's relative path and contents, in path order; stable across hosts."""
    return _digest(cookbook_files(chef_dir))


def _digest(members: list[tuple[str, Path]]) -> str:
    digest = hashlib.sha256()
    for relative, path in members:
        content = path.read_bytes()
        # Length-prefixed fields: no two different trees can produce the same byte stream.
        for field in (relative.encode(), content):
            digest.update(len(field).to_bytes(8, "big"))
            digest.update(field)
    return f"sha256:{digest.hexdigest()}"


def cookbook_archive(chef_dir: str | Path, extra: dict[str, bytes] | None = None) -> bytes:
    """The chef folder (plus `extra` files by name) as a reproducible tar.gz, built in memory."""
    return _archive(cookbook_files(chef_dir), extra)


def _archive(files: list[tuple[str, Path]], extra: dict[str, bytes] | None) -> bytes:
    buffer = io.BytesIO()
    # mtime=0 in the gzip header and fixed tar metadata: same inputs, same bytes.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive:
        members = [(rel, path.read_bytes()) for rel, path in files]
        members += sorted((extra or {}).items())
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
