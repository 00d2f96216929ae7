"""User data, run as cloud-init runs it on an Amazon Linux 2023 instance at its first boot.

cloud-init reads the instance's user data (gzip-compressed or not) and acts on its first line:
- `#!…`: a script, saved as `/var/lib/cloud/instance/scripts/part-001` and run as root late in
  the boot (the final stage), its output appended to `/var/log/cloud-init-output.log`;
- `#cloud-config`: YAML; `write_files` are written early in the boot, before the services start
  (those with `defer: true` in the final stage), and `runcmd` becomes the shell script
  `scripts/runcmd`, run in the final stage (a string entry is a shell line, a list an argv);
- anything else is kept in `user-data.txt` and not run.
A script runs once per instance: an instance launched from an image of another does not run the
other's user data again.

    prepare(upper, instance_id, user_data: bytes | None) -> None

`prepare` writes the instance's cloud-init data into its fresh writable layer before it boots:
`/var/lib/cloud/data/instance-id`, and under `/var/lib/cloud/instances/<id>/` the user data, the
final stage's scripts and the early stage's `write-files` script, all made here from parsed data:
nothing in user data is evaluated outside the instance, and every file it names is written
inside it, by the instance's root. The base image (image.py) runs the stages: the early one from
`boot.py` before init, the final one as the enabled unit `cloud-final.service`.
"""

from __future__ import annotations

import base64
import gzip
import os
import shlex
from pathlib import Path

import yaml

# Run inside the instance (the base image's /usr/libexec/cloud-init/stage), as root, with the
# stage's name: the early stage writes files, the final one the deferred files and the scripts.
STAGE_SCRIPT = r"""#!/bin/sh
# cloud-init's stages for a sandbox instance: what prepare() left for this instance's id.
stage="$1"
id="$(cat /var/lib/cloud/data/instance-id 2>/dev/null)" || exit 0
dir="/var/lib/cloud/instances/$id"
[ -d "$dir" ] || exit 0
ln -sfn "$dir" /var/lib/cloud/instance
exec >>/var/log/cloud-init-output.log 2>&1
if [ "$stage" = init ]; then
    [ -e "$dir/sem/write-files" ] && exit 0
    [ -f "$dir/write-files" ] && /bin/sh "$dir/write-files"
    : >"$dir/sem/write-files"
    exit 0
fi
[ -e "$dir/boot-finished" ] && exit 0
# As on EC2, where cloud-init reads the user data from the metadata service: the scripts run once
# it answers (or after 10 s, when the instance has none).
tries=0
until curl -s -o /dev/null --connect-timeout 1 http://169.254.169.254/ || [ $tries -ge 50 ]; do
    tries=$((tries + 1)); sleep 0.2
done
[ -f "$dir/write-files-deferred" ] && /bin/sh "$dir/write-files-deferred"
for script in "$dir"/scripts/*; do
    [ -f "$script" ] || continue
    "$script" || echo "cloud-init: script $(basename "$script") failed (exit $?)"
done
echo "Cloud-init finished at $(date -u +%FT%TZ)"
date -u +%FT%TZ >"$dir/boot-finished"
"""
CLOUD_FINAL_UNIT = """\
[Unit]
Description=Execute cloud user/final scripts
After=network-online.target

[Service]
Type=simple
ExecStart=/usr/libexec/cloud-init/stage final

[Install]
WantedBy=multi-user.target
"""
# Keys this sandbox acts on; others are reported in the output log, as not run.
HANDLED = {"write_files", "runcmd"}


class UserDataError(ValueError):
    """User data that cloud-init would reject: the reason, in one line."""


def prepare(upper: Path, instance_id: str, user_data: bytes | None) -> None:
    """Write the instance's id and its user data's stages into its fresh writable layer."""
    data = upper / "var/lib/cloud/data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "instance-id").write_text(instance_id + "\n")
    if not user_data:
        return
    here = upper / "var/lib/cloud/instances" / instance_id
    for folder in ("scripts", "sem"):
        (here / folder).mkdir(parents=True, exist_ok=True)
    _write(here / "user-data.txt", user_data, 0o600)
    try:
        raw = _unzipped(user_data)
        if raw.startswith(b"#!"):
            _write(here / "scripts/part-001", raw, 0o700)
        elif raw.split(b"\n", 1)[0].strip() == b"#cloud-config":
            _cloud_config(here, raw)
        else:
            raise UserDataError("user data is neither a #! script nor #cloud-config: not run")
    except UserDataError as error:
        # As on EC2: the instance boots all the same; cloud-init's log says what it refused.
        (upper / "var/log").mkdir(parents=True, exist_ok=True)
        with open(upper / "var/log/cloud-init-output.log", "a") as log:
            log.write(f"cloud-init: {error}\n")


def _unzipped(user_data: bytes) -> bytes:
    """cloud-init accepts gzip-compressed user data (its magic bytes)."""
    if user_data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(user_data)
        except (OSError, EOFError) as error:
            raise UserDataError(f"user data: not valid gzip: {error}") from None
    return user_data


def _write(path: Path, content: bytes, mode: int) -> None:
    path.write_bytes(content)
    os.chmod(path, mode)


def _cloud_config(here: Path, raw: bytes) -> None:
    try:
        config = yaml.safe_load(raw) or {}
    except yaml.YAMLError as error:
        raise UserDataError(f"user data: #cloud-config is not YAML: "
                            f"{str(error).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise UserDataError("user data: #cloud-config must be a mapping")
    files = config.get("write_files") or []
    if not isinstance(files, list):
        raise UserDataError("user data: write_files must be a list")
    outputs = {}  # everything checked before anything is written
    numbered = list(enumerate(files))
    early = [(n, entry) for n, entry in numbered if not _deferred(entry)]
    late = [(n, entry) for n, entry in numbered if _deferred(entry)]
    if early:
        outputs["write-files"] = (_files_script(early), 0o600)
    if late:
        outputs["write-files-deferred"] = (_files_script(late), 0o600)
    if config.get("runcmd"):
        outputs["scripts/runcmd"] = (_runcmd(config["runcmd"]), 0o700)
    ignored = sorted(set(map(str, config)) - HANDLED)
    if ignored:
        note = f"cloud-init (sandbox): not run: {', '.join(ignored)}"
        outputs["scripts/000-ignored"] = (f"#!/bin/sh\necho {shlex.quote(note)}\n", 0o700)
    for name, (text, mode) in outputs.items():
        _write(here / name, text.encode(), mode)


def _deferred(entry) -> bool:
    return isinstance(entry, dict) and entry.get("defer") is True


def _files_script(entries: list[tuple[int, object]]) -> str:
    """Shell that writes `write_files` entries inside the instance: content as base64, so no
    byte of it is ever read as shell."""
    lines = ["set -u"]
    for number, entry in entries:
        path, content, mode, owner, append = _file_entry(entry, number)
        quoted = shlex.quote(path)
        encoded = base64.b64encode(content).decode()
        lines += [f'mkdir -p "$(dirname {quoted})"',
                  f"echo {encoded} | base64 -d {'>>' if append else '>'} {quoted}",
                  f"chmod {mode:o} {quoted}",
                  f"chown {shlex.quote(owner)} {quoted} || "
                  f"echo 'cloud-init: write_files: no owner {owner} for {path}'"]
    return "\n".join(lines) + "\n"


def _file_entry(entry, number: int) -> tuple[str, bytes, int, str, bool]:
    where = f"user data: write_files[{number}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise UserDataError(f"{where}: needs a path")
    path = entry["path"]
    if not path.startswith("/") or "\n" in path or "\x00" in path:
        raise UserDataError(f"{where}.path: must be an absolute path on one line, got {path!r}")
    content = entry.get("content", "")
    data = content.encode() if isinstance(content, str) else bytes(content or b"")
    encoding = str(entry.get("encoding", "text")).lower()
    try:
        if encoding in ("b64", "base64", "gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
            data = base64.b64decode(data, validate=False)
        if encoding.startswith("gz"):
            data = gzip.decompress(data)
    except (ValueError, OSError, EOFError) as error:
        raise UserDataError(f"{where}.content: not {encoding}: {error}") from None
    if encoding not in ("text", "b64", "base64", "gz", "gzip", "gz+b64", "gzip+base64",
                        "gz+base64", "gzip+b64"):
        raise UserDataError(f"{where}.encoding: unknown encoding {encoding!r}")
    try:
        mode = int(str(entry.get("permissions", "0644")), 8)
    except ValueError:
        raise UserDataError(f"{where}.permissions: not an octal mode: "
                            f"{entry.get('permissions')!r}") from None
    owner = str(entry.get("owner", "root:root"))
    if not owner or any(c in owner for c in "\n\x00"):
        raise UserDataError(f"{where}.owner: not a user[:group]: {owner!r}")
    return path, data, mode & 0o7777, owner, entry.get("append") is True


def _runcmd(commands) -> str:
    """cloud-init's runcmd script: a string is a shell line, a list one quoted command."""
    if not isinstance(commands, list):
        raise UserDataError("user data: runcmd must be a list")
    lines = ["#!/bin/sh"]
    for number, command in enumerate(commands):
        if isinstance(command, list):
            lines.append(shlex.join(str(part) for part in command))
        elif isinstance(command, str):
            lines.append(command)
        else:
            raise UserDataError(f"user data: runcmd[{number}]: a string or a list")
    return "\n".join(lines) + "\n"
