"""The sandbox's base image: the read-only layer that makes an instance look like Amazon Linux 2023.

It lies over the folders of programs the host shares (boot.HOST_SHARED: /usr and /etc, whose sh,
python3, dnf, rpm, sudo and ruby the instance runs) and holds the rest of the root: AL2023's
`/var` (its logs, caches, dnf's and rpm's databases empty, `/var/tmp`), `/opt` and the homes, so
that an instance never starts from the host's leftovers; and what differs on AL2023:
`/etc/os-release` (ID=amzn, VERSION_ID=2023), `/usr/bin/yum` → `dnf-3`, an rpm database under
`/var/lib/rpm` that already lists what a base AMI provides (python3, bash, systemd, sudo, …, plus
`kiln.sandbox.base_provides`), the `ec2-user` account with sudo, cloud-init's stages
(cloudinit.py), and docker-systemctl-replacement as `/usr/bin/systemctl` and as PID 1
(`/usr/lib/systemd/systemd`), so Chef's `service` resource enables and starts units.

    ensure(state_dir, provides=(), chef_solo=None) -> Path   # built once per content, reused

`chef_solo`, a chef-solo found on the host, becomes `/usr/bin/chef-solo` in the image, as an
omnibus install's symlink would on AWS; without one, the image has no Chef.

Where KILN_SANDBOX_BASE_CACHE names a folder (the test suite gives each run one), a base layer is
built once for every state dir of that run: it is kept there by its content's stamp, and a fresh
state dir's layer is a copy of it whose files are hard links (its folders its own). That is sound
because a layer is never written: instances write into their own upper layer (overlayfs copies a
file up before changing it), and a changed base is a new tree replacing the old one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

from sandbox import userns
from sandbox.machines import boot, confine, frozen, images

OS_RELEASE = """\
NAME="Amazon Linux"
VERSION="2023"
ID="amzn"
ID_LIKE="fedora"
VERSION_ID="2023"
PLATFORM_ID="platform:al2023"
PRETTY_NAME="Amazon Linux 2023"
ANSI_COLOR="0;33"
CPE_NAME="cpe:2.3:o:amazon:amazon_linux:2023"
HOME_URL="https://aws.amazon.com/linux/amazon-linux-2023/"
SUPPORT_END="2028-03-15"
"""
# Amazon Linux 2023's /etc/dnf/dnf.conf (Debian's skips a repository it cannot read).
DNF_CONF = """\
[main]
gpgcheck=True
installonly_limit=3
clean_requirements_on_remove=True
best=False
skip_if_unavailable=False
"""
SYSTEM_RELEASE = "Amazon Linux release 2023 (Amazon Linux)\n"
# Amazon Linux 2023's /etc/sudoers, without its comments.
SUDOERS = """\
Defaults   !visiblepw
Defaults    always_set_home
Defaults    match_group_by_gid
Defaults    always_query_group_plugin
Defaults    env_reset
Defaults    secure_path = /sbin:/bin:/usr/sbin:/usr/bin
root    ALL=(ALL)       ALL
%wheel  ALL=(ALL)       ALL
#includedir /etc/sudoers.d
"""
EC2_USER = ("ec2-user", 1000)
CONFINE = "/usr/libexec/kiln-sandbox/confine"  # confine.py, run by the instance's python3
_building = threading.Lock()
CACHE_ENV = "KILN_SANDBOX_BASE_CACHE"
# The host's folders that are not the instance's (its units, sshd's, …; its repositories): the
# image's own, empty, hide them.
HIDDEN = ("etc/systemd/system", "usr/lib/systemd/system", "etc/yum.repos.d", "etc/init.d",
          "etc/sudoers.d", *(f"etc/rc{level}.d" for level in "0123456S"))
# Amazon Linux 2023's /var, as its AMI ships it (the instance's, never the host's): folders with
# their modes, its empty login records, and its links into /run.
VAR_FOLDERS = {
    "var": 0o755, "var/adm": 0o755, "var/cache": 0o755, "var/cache/dnf": 0o755,
    "var/cache/ldconfig": 0o700, "var/db": 0o755, "var/empty": 0o555, "var/games": 0o755,
    "var/lib": 0o755, "var/lib/alternatives": 0o755, "var/lib/cloud": 0o755,
    "var/lib/dnf": 0o755, "var/lib/misc": 0o755, "var/lib/rpm": 0o755,
    "var/lib/rpm-state": 0o755, "var/lib/systemd": 0o755, "var/local": 0o755, "var/log": 0o755,
    "var/log/journal": 0o755, "var/log/private": 0o700, "var/opt": 0o755, "var/spool": 0o755,
    "var/spool/mail": 0o775, "var/tmp": 0o1777,
}
VAR_FILES = {"var/log/lastlog": 0o664, "var/log/wtmp": 0o664, "var/log/btmp": 0o660}
VAR_LINKS = {"var/run": "../run", "var/lock": "../run/lock", "var/mail": "spool/mail"}
# An opaque folder hides the same folder of the layers below. Without root (in a user namespace)
# overlayfs reads its marks from user.* xattrs.
OPAQUE = "user.overlay.opaque" if userns.inside() else "trusted.overlay.opaque"
# What an AL2023 base AMI has installed that apps commonly require.
BASE_PROVIDES = (
    "system-release = 2023", "system-release(releasever) = 2023", "python3 = 3.9.16",
    "/usr/bin/python3", "bash", "/bin/sh", "/bin/bash", "coreutils", "shadow-utils",
    "/usr/sbin/useradd", "/usr/sbin/groupadd", "systemd", "/usr/bin/systemctl", "sudo",
    "curl", "/usr/bin/curl", "glibc", "openssl", "gnupg2", "dnf", "rpm", "sed", "grep",
    "findutils", "util-linux", "tar", "gzip",
)
BASE_SPEC = """\
Name: system-release
Version: 2023
Release: 1.amzn2023
Summary: Amazon Linux 2023 as the Kiln sandbox shows it
License: Apache-2.0
BuildArch: noarch
AutoReqProv: no
{provides}

%description
The programs of a sandbox instance are the host's; this package records in the instance's rpm
database what an Amazon Linux 2023 base image provides, so that dnf resolves dependencies on them.

%files
"""


def layer_dir(state_dir: str | Path) -> Path:
    return Path(state_dir).resolve() / "machines" / "base"


def ensure(state_dir: str | Path, provides: tuple[str, ...] = (),
           chef_solo: str | None = None) -> Path:
    """The base layer under the state dir, rebuilt only when what goes into it changed, and
    frozen (frozen.py)."""
    # Instances boot in parallel (a server group's): one builds, the others wait and reuse it.
    with _building:
        layer = _ensure(state_dir, provides, chef_solo)
        frozen.freeze(layer)
        return layer


def freeze_built(state_dir: str | Path) -> None:
    """Freeze the base layer a last server built (at a server's start: a new namespace has no
    mounts)."""
    if (layer_dir(state_dir).parent / "base.sha256").is_file() and layer_dir(state_dir).is_dir():
        frozen.freeze(layer_dir(state_dir))


def _ensure(state_dir: str | Path, provides: tuple[str, ...], chef_solo: str | None) -> Path:
    import systemctl2.systemctl3 as systemctl_module  # a large module: loaded when building

    from sandbox.machines import cloudinit

    layer = layer_dir(state_dir)
    capabilities = tuple(dict.fromkeys((*BASE_PROVIDES, *provides)))
    stamp = hashlib.sha256(json.dumps(
        [capabilities, chef_solo, userns.inside(), userns.instance_ids(), OS_RELEASE, DNF_CONF,
         BASE_SPEC, SUDOERS, VAR_FOLDERS, VAR_FILES, VAR_LINKS, HIDDEN, cloudinit.STAGE_SCRIPT,
         Path(confine.__file__).read_text(),
         cloudinit.CLOUD_FINAL_UNIT, Path(systemctl_module.__file__).stat().st_size],
        sort_keys=True).encode()).hexdigest()
    if (layer.parent / "base.sha256").is_file() and \
            (layer.parent / "base.sha256").read_text() == stamp and layer.is_dir():
        return layer
    # Without root its sudo is setuid to this user: like every layer, nobody else's to reach.
    images.machines_dir(state_dir)
    work = Path(tempfile.mkdtemp(prefix="base-", dir=layer.parent))
    try:
        tree = work / "tree"
        if not _from_cache(stamp, tree):
            _build(tree, work, capabilities, chef_solo)
            _to_cache(stamp, tree)
        if layer.exists():
            frozen.thaw(layer)
            shutil.rmtree(layer)
        tree.chmod(0o700)
        os.replace(tree, layer)
        (layer.parent / "base.sha256").write_text(stamp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return layer


def _build(tree: Path, work: Path, capabilities: tuple[str, ...], chef_solo: str | None) -> None:
    ids = userns.instance_ids()
    if userns.inside() or ids:  # the instance's root is not the host's
        _without_root(tree)
    _write_files(tree, chef_solo)
    _write_rpm_database(tree, work, capabilities)
    if ids:
        userns.shift_owners(tree, *ids)


def _cache() -> Path | None:
    """The folder of KILN_SANDBOX_BASE_CACHE, its owner's alone; None without one, or when it is
    not this user's to use (a sandbox without root under another user builds its own)."""
    folder = os.environ.get(CACHE_ENV)
    if not folder:
        return None
    try:
        return images.private(Path(folder))
    except OSError:
        return None


def _from_cache(stamp: str, tree: Path) -> bool:
    """`tree` as a copy of the cached layer of this stamp, its files hard links; False when there
    is none (or it could not be copied: then the layer is built)."""
    cache = _cache()
    if cache is None or not (cache / stamp).is_dir():
        return False
    if _link_copy(cache / stamp, tree):
        return True
    shutil.rmtree(tree, ignore_errors=True)
    return False


def _to_cache(stamp: str, tree: Path) -> None:
    """Keep a linked copy of a new layer for the next state dir; another process's copy of the
    same stamp, if one came first, stays."""
    cache = _cache()
    if cache is None or (cache / stamp).exists():
        return
    staging = Path(tempfile.mkdtemp(prefix="new-", dir=cache))
    try:
        if _link_copy(tree, staging / "tree"):
            with contextlib.suppress(OSError):
                os.rename(staging / "tree", cache / stamp)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _link_copy(source: Path, target: Path) -> bool:
    """`target` made as `source`: folders with their owners, modes and extended attributes (the
    overlay's opaque marks, which cp must keep or fail), files and links hard-linked."""
    done = subprocess.run(["cp", "-a", "--preserve=xattr", "--link", "--no-target-directory",
                           str(source), str(target)], capture_output=True)
    return done.returncode == 0


def _write_files(tree: Path, chef_solo: str | None) -> None:
    import systemctl2.systemctl3 as systemctl_module

    from sandbox.machines import cloudinit

    def put(path: str, text: str, mode: int = 0o644) -> None:
        target = tree / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def link(path: str, to: str) -> None:
        target = tree / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(to)

    put("etc/os-release", OS_RELEASE)
    put("usr/lib/os-release", OS_RELEASE)
    put("etc/system-release", SYSTEM_RELEASE)
    put("etc/amazon-linux-release", SYSTEM_RELEASE)
    put("etc/hostname", "localhost\n")
    put("etc/rpm/macros.dbpath", "%_dbpath /var/lib/rpm\n")
    put("etc/dnf/dnf.conf", DNF_CONF)
    link("usr/bin/yum", "dnf-3")
    # The interpreter named directly (no env): PID 1 keeps the name it was started by.
    script = Path(systemctl_module.__file__).read_text()
    put("usr/bin/systemctl", "#!/usr/bin/python3\n" + script.split("\n", 1)[1], 0o755)
    # docker-systemctl-replacement runs as init when it is PID 1; Chef recognises systemd by
    # PID 1's name, which this path gives it.
    link("usr/lib/systemd/systemd", "/usr/bin/systemctl")
    for path in ("etc/systemd/system/multi-user.target.wants", "usr/lib/systemd/system",
                 "etc/yum.repos.d", "etc/pki/rpm-gpg", "opt"):
        (tree / path).mkdir(parents=True, exist_ok=True)
    for name, mode in boot.TOP.items():  # the root's top folders, the instance's root's
        (tree / name).mkdir(exist_ok=True)
        (tree / name).chmod(mode)
    _write_var(tree)
    # What a session runs first when it enters the instance (instances.enter_command).
    put(CONFINE.lstrip("/"), "#!/usr/bin/python3\n" + Path(confine.__file__).read_text(), 0o755)
    # cloud-init, as on an AL2023 AMI: its stages run the instance's user data (cloudinit.py).
    put("usr/libexec/cloud-init/stage", cloudinit.STAGE_SCRIPT, 0o755)
    put("usr/lib/systemd/system/cloud-final.service", cloudinit.CLOUD_FINAL_UNIT)
    link("etc/systemd/system/multi-user.target.wants/cloud-final.service",
         "/usr/lib/systemd/system/cloud-final.service")
    # The host's units (its sshd, …) and cloud-init state are not the instance's: these folders
    # hide the host's.
    for path in HIDDEN:
        (tree / path).mkdir(parents=True, exist_ok=True)
        os.setxattr(tree / path, OPAQUE, b"y")
    put("etc/passwd", _accounts("/etc/passwd", f"{EC2_USER[0]}:x:{EC2_USER[1]}:{EC2_USER[1]}:"
                                f"EC2 Default User:/home/{EC2_USER[0]}:/bin/bash"))
    put("etc/group", _accounts("/etc/group", f"{EC2_USER[0]}:x:{EC2_USER[1]}:"))
    # Every account locked, ec2-user too (sudo needs no password): never the host's hashes.
    put("etc/shadow", _locked(tree / "etc/passwd", "{}:!!:19000:0:99999:7:::"), 0o600)
    put("etc/gshadow", _locked(tree / "etc/group", "{}:!::"), 0o600)
    for name in ("passwd", "group", "shadow", "gshadow"):  # the account tools' backups
        target = tree / "etc" / name
        put(f"etc/{name}-", target.read_text(), target.stat().st_mode & 0o777)
    put("etc/.pwd.lock", "", 0o600)  # the account tools' lock, the instance's own
    put("etc/sudoers.d/90-cloud-init-users",
        f"{EC2_USER[0]} ALL=(ALL) NOPASSWD:ALL\n", 0o440)
    home = tree / "home" / EC2_USER[0]
    home.mkdir(parents=True)
    os.chown(home, EC2_USER[1], EC2_USER[1])
    home.chmod(0o700)
    if chef_solo:
        # As an omnibus install's /usr/bin/chef-solo: the command on PATH, the real one elsewhere.
        put("usr/bin/chef-solo", f'#!/bin/sh\nexec {shlex.quote(chef_solo)} "$@"\n', 0o755)


def _write_var(tree: Path) -> None:
    """AL2023's /var: its folders, empty login records and links (VAR_*)."""
    for path, mode in VAR_FOLDERS.items():
        (tree / path).mkdir(parents=True, exist_ok=True)
        (tree / path).chmod(mode)
    for path, mode in VAR_FILES.items():
        (tree / path).touch()
        (tree / path).chmod(mode)
    for path, target in VAR_LINKS.items():
        (tree / path).symlink_to(target)


def _without_root(tree: Path) -> None:
    """What a base image needs in a user namespace, where the host's files belong to an
    unmapped root (nobody): every folder of the folders the host shares, as the namespace's root's,
    so the instance may write into it (the host's files in it can be replaced, not rewritten);
    a copy of the host's /etc, whose files tools rewrite in place (useradd's backups, say);
    and sudo, its plugins and sudoers of the instance's own, since sudo insists on being root's."""
    shared = [top for top in boot.HOST_SHARED if os.path.isdir(f"/{top}") and not
              os.path.islink(f"/{top}")]
    for top in shared:
        _folders_of(f"/{top}", tree)
    _copy_etc(tree)
    for source in ("/usr/bin/sudo", *map(str, Path("/usr/libexec/sudo").glob("*"))):
        target = tree / source.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    (tree / "usr/bin/sudo").chmod(0o4111)
    (tree / "etc").mkdir(exist_ok=True)
    (tree / "etc/sudoers").write_text(SUDOERS)
    (tree / "etc/sudoers").chmod(0o440)
    shutil.copy2("/etc/sudo.conf", tree / "etc/sudo.conf")


def _folders_of(top: str, tree: Path) -> None:
    """Every folder under `top` but mounts on it, made in `tree` with its mode."""
    (tree / top.lstrip("/")).mkdir(parents=True, exist_ok=True)
    device = os.lstat(top).st_dev
    pending = [top]
    while pending:
        with contextlib.suppress(OSError), os.scandir(pending.pop()) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(info.st_mode) and info.st_dev == device:
                        target = tree / entry.path.lstrip("/")
                        target.mkdir(exist_ok=True)
                        target.chmod(stat.S_IMODE(info.st_mode))
                        pending.append(entry.path)


def _copy_etc(tree: Path) -> None:
    """The host's /etc files every user may read, but those of the hidden folders (never its
    secrets: shadow, SSH host keys, …)."""
    hidden = tuple(f"/{path}/" for path in HIDDEN)
    for folder, _names, files in os.walk("/etc"):
        if (folder + "/").startswith(hidden):
            continue
        for name in files:
            source = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                if os.path.islink(source) or os.stat(source).st_mode & 0o004:
                    shutil.copy2(source, tree / source.lstrip("/"), follow_symlinks=False)


def _locked(accounts: Path, line: str) -> str:
    """A shadow file with `line` (a template) for each account or group of `accounts`."""
    names = [entry.split(":")[0] for entry in accounts.read_text().splitlines() if entry]
    return "".join(line.format(name) + "\n" for name in names)


def _accounts(path: str, extra: str) -> str:
    """The host's system accounts and groups (ids below 1000, and nobody) plus `extra`."""
    wanted = _system_names("/etc/group" if path == "/etc/group" else "/etc/passwd")
    kept = [line for line in Path(path).read_text().splitlines()
            if line.split(":")[0] in wanted]
    return "\n".join([*kept, extra, ""])


def _system_names(path: str) -> set[str]:
    names = set()
    for line in Path(path).read_text().splitlines():
        name, _, number = line.split(":")[:3]
        if number.isdigit() and (int(number) < 1000 or name in ("nobody", "nogroup")):
            names.add(name)
    return names


def _write_rpm_database(tree: Path, work: Path, capabilities: tuple[str, ...]) -> None:
    """An rpm database under var/lib/rpm holding the system-release package and its provides."""
    spec = work / "system-release.spec"
    spec.write_text(BASE_SPEC.format(provides="\n".join(
        f"Provides: {capability}" for capability in capabilities)))
    env = {**os.environ, "HOME": str(work)}  # keep rpm away from the real HOME
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {work}", str(spec)],
                   check=True, env=env, capture_output=True)
    dbpath = tree / "var/lib/rpm"
    dbpath.mkdir(parents=True, exist_ok=True)
    rpm = next((work / "RPMS").rglob("*.rpm"))
    subprocess.run(["rpm", "--dbpath", str(dbpath), "--initdb"], check=True, env=env,
                   capture_output=True)
    subprocess.run(["rpm", "--dbpath", str(dbpath), "-i", "--justdb", "--nodeps", str(rpm)],
                   check=True, env=env, capture_output=True)
