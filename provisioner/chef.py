"""What chef-solo gets on the bake instance: node.json, solo.rb, the cookbooks and their digest.

    node_json(app, version, release, package, service, repo_baseurl, gpgkey_url, smoke_commands,
              rpm_version=None) -> dict
    solo_rb(staging_dir, chef_license="accept-no-persist") -> str
    cookbook_digest(chef_dir) -> str               # "sha256:<hex>", recorded on the image
    smoke_commands(templates, **values) -> list[str]
    to_rpm_version(version) -> str                # 2.0.0-rc.1 -> 2.0.0~rc.1
    cookbook_archive(chef_dir) -> bytes            # chef/ as a tar.gz, for the upload

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
from pathlib import Path

from cloud.errors import KilnError

RUN_LIST = ["recipe[kiln_app]"]
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
              rpm_version: str | None = None, gpgkey_fingerprint: str | None = None) -> dict:
    """The attributes of the one chef-solo run; `package` is the RPM's name.

    `rpm_version` defaults to the RPM spelling of `version`.
    """
    for field, value in (("app", app), ("version", version), ("release", release),
                         ("package", package), ("repo_baseurl", repo_baseurl),
                         ("gpgkey_url", gpgkey_url)):
        if not value:
            raise KilnError(f"node.json: {field} is empty")
    evr = f"{rpm_version or to_rpm_version(version)}-{release}"
    return {
        "run_list": list(RUN_LIST),
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


def solo_rb(staging_dir: str, chef_license: str = "accept-no-persist") -> str:
    """chef-solo's configuration; `staging_dir` is the absolute staging path on the instance."""
    if not staging_dir.startswith("/"):
        raise KilnError(f"solo.rb: staging directory {staging_dir!r} must be absolute")
    base = staging_dir.rstrip("/") or "/"

    def under(name: str) -> str:
        return ruby_string(f"{base}/{name}")

    return "\n".join([
        "# chef-solo configuration written by Kiln for one bake; paths are on the bake instance.",
        f"chef_repo_path {ruby_string(base)}",
        f"cookbook_path [{under('cookbooks')}]",
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
    digest = hashlib.sha256()
    for relative, path in cookbook_files(chef_dir):
        content = path.read_bytes()
        # Length-prefixed fields: no two different trees can produce the same byte stream.
        for field in (relative.encode(), content):
            digest.update(len(field).to_bytes(8, "big"))
            digest.update(field)
    return f"sha256:{digest.hexdigest()}"


def cookbook_archive(chef_dir: str | Path, extra: dict[str, bytes] | None = None) -> bytes:
    """The chef folder (plus `extra` files by name) as a reproducible tar.gz, built in memory."""
    buffer = io.BytesIO()
    # mtime=0 in the gzip header and fixed tar metadata: same inputs, same bytes.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive:
        members = [(rel, path.read_bytes()) for rel, path in cookbook_files(chef_dir)]
        members += sorted((extra or {}).items())
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
