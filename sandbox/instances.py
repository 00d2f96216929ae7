"""Sandbox bake instances: what stands in for an EC2 instance that Kiln reaches over SSH.

The sandbox's EC2 (moto, patched by sandbox.patches.instances) calls `launch` at RunInstances
with a KeyName, the way cloud-init would on AWS: the key pair's public key goes into the sandbox
sshd's `authorized_keys`, tied by a forced command to that instance id. Every session opened with
that key runs `sandbox/instance/session`, which puts it in the instance's own world under
`<state_dir>/instances/<id>/`:

    home/   the login user's HOME (the bake's staging dir `kiln-bake` lands here)
    root/   the instance's filesystem: /etc/yum.repos.d, the rpm database, installed packages
    dnf/    HOME for dnf run with --installroot root/ (its rpm macros point inside the root)

On the instance, PATH starts with `sandbox/instance/bin`: `sudo` (a pass-through: the sandbox user
already owns the instance's world), `chef-solo` (a stand-in: Chef cannot be installed here) and
`sandbox-install-chef`. `terminate` removes the key and the instance's world.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from cloud.console import say
from sandbox.sshd import Sshd, current_user

INSTANCE_KIT = Path(__file__).resolve().parent / "instance"
SESSION = INSTANCE_KIT / "session"
KEY_OPTIONS = "no-port-forwarding,no-agent-forwarding,no-X11-forwarding"
CHEF_INSTALL_COMMAND = "sandbox-install-chef {version}"
BASE_PACKAGE = "sandbox-base"
# What Amazon Linux 2023 base images have and apps commonly require; sandbox-base declares them
# so that dnf can resolve such a dependency. Only /bin/sh is real in an instance root.
BASE_PROVIDES = ["python3 = 3.9.16", "/usr/bin/python3"]


# -- lifecycle, called by sandbox.control ---------------------------------------------------
def start(state_dir: str | Path) -> int:
    """Start the sandbox sshd (reused when running) and build the base repo once; the port."""
    port = Sshd(state_dir).up()
    ensure_base_repo(state_dir)
    return port


def stop(state_dir: str | Path) -> bool:
    return Sshd(state_dir).down()


def overlay(settings, state_dir: str | Path | None = None):
    """Point the bake at the sandbox sshd; return the same settings, changed in place.

    kiln.bake.ssh_port: the sshd's port; ssh_user: the current user (the only one sshd admits);
    ssh_cidrs: 127.0.0.1/32 when empty (no public-IP lookup offline); chef_install_command: the
    sandbox's (the real one would install Chef on this host); smoke_commands:
    kiln.sandbox.smoke_commands unless null (no service runs on a sandbox instance). sudo stays
    as configured: the instance's `sudo` is a pass-through.
    """
    sshd = Sshd(state_dir or settings.sandbox.state_dir)
    bake = settings.bake
    bake["ssh_port"] = sshd.port or start(sshd.dir.parent)
    # Once per settings object: a caller may adjust the overlaid values and connect again.
    if not getattr(settings, "sandbox_overlaid", False):
        bake["ssh_user"] = current_user()
        if not bake.get("ssh_cidrs"):
            bake["ssh_cidrs"] = [f"{sshd.host}/32"]
        bake["chef_install_command"] = CHEF_INSTALL_COMMAND
        if settings.sandbox.get("smoke_commands") is not None:
            bake["smoke_commands"] = list(settings.sandbox.smoke_commands)
        settings.sandbox_overlaid = True
    say(f"sandbox: bake instances are reached over the sandbox sshd at "
        f"{sshd.host}:{bake['ssh_port']}")
    return settings


# -- instances, called inside the moto server -----------------------------------------------
def instance_dir(state_dir: str | Path, instance_id: str) -> Path:
    return Path(state_dir).resolve() / "instances" / instance_id


def launch(state_dir: str | Path, instance_id: str, public_key: str) -> Path:
    """Create the instance's world and authorize its key pair for it."""
    world = instance_dir(state_dir, instance_id)
    root = world / "root"
    for path in (world / "home", world / "dnf", root / "var/lib/rpm", root / "etc/yum.repos.d"):
        path.mkdir(parents=True, exist_ok=True)
    # Debian's rpm keeps its database under $HOME unless told otherwise: plain `rpm -q` on the
    # instance reads the root's database; dnf (run with --installroot) gets a path inside it.
    (world / "home/.rpmmacros").write_text(f"%_dbpath {root}/var/lib/rpm\n")
    (world / "dnf/.rpmmacros").write_text("%_dbpath /var/lib/rpm\n")
    with _keys(state_dir) as lines:
        lines[:] = [line for line in lines if not _belongs(line, instance_id)]
        lines.append(authorized_key_line(state_dir, instance_id, public_key))
    return world


def terminate(state_dir: str | Path, instance_id: str) -> None:
    """Remove the instance's key line and its world."""
    with _keys(state_dir) as lines:
        lines[:] = [line for line in lines if not _belongs(line, instance_id)]
    shutil.rmtree(instance_dir(state_dir, instance_id), ignore_errors=True)


def forget_all(state_dir: str | Path) -> None:
    """Every instance is gone (the sandbox was reset): no keys, no worlds."""
    with _keys(state_dir) as lines:
        lines.clear()
    shutil.rmtree(Path(state_dir).resolve() / "instances", ignore_errors=True)


def authorized_key_line(state_dir: str | Path, instance_id: str, public_key: str) -> str:
    command = shlex.join([str(SESSION), str(Path(state_dir).resolve()), instance_id])
    key = " ".join(public_key.split()[:2])  # type and base64, without moto's comment
    return (f'command="{command}",{KEY_OPTIONS} {key} '
            f"kiln-sandbox-instance={instance_id}")


def _belongs(line: str, instance_id: str) -> bool:
    return line.rstrip().endswith(f" kiln-sandbox-instance={instance_id}")


@contextmanager
def _keys(state_dir: str | Path):
    """The authorized_keys lines, locked; written back atomically on exit."""
    path = Sshd(state_dir).authorized_keys
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / "authorized_keys.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lines = path.read_text().splitlines() if path.exists() else []
        yield lines
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as handle:
            handle.write("".join(f"{line}\n" for line in lines))
        os.chmod(handle.name, 0o600)
        os.replace(handle.name, path)


# -- the base package every instance root gets before anything else --------------------------
BASE_SPEC = """\
Name: {name}
Version: 1
Release: 1
Summary: Kiln sandbox base image: the /bin/sh that package scriptlets run with
License: Apache-2.0
BuildArch: noarch
AutoReqProv: no
{provides}
%global debug_package %{{nil}}
%global __os_install_post %{{nil}}
%global _binaries_in_noarch_packages_terminate_build 0

%description
An empty dnf installroot has no shell, so no scriptlet could run. This package stands for the
base image's shell: the host's sh and the libraries it loads, copied as they are.

%install
mkdir -p %{{buildroot}} && cp -a %{{_sourcedir}}/tree/. %{{buildroot}}/

%files
{files}
"""


def base_repo(state_dir: str | Path) -> Path:
    return Path(state_dir).resolve() / "base-repo"


def ensure_base_repo(state_dir: str | Path) -> Path:
    """Build the `sandbox-base` RPM and its repo under the state dir, unless already there."""
    repo = base_repo(state_dir)
    work = Path(tempfile.mkdtemp(prefix="base-build-", dir=Path(state_dir).resolve()))
    try:
        tree = work / "SOURCES/tree"
        files = _copy_shell(tree)
        provides = "\n".join(f"Provides: {capability}" for capability in BASE_PROVIDES)
        spec = BASE_SPEC.format(name=BASE_PACKAGE, provides=provides, files="\n".join(files))
        stamp = hashlib.sha256(spec.encode()).hexdigest()
        if (repo / "spec.sha256").exists() and (repo / "spec.sha256").read_text() == stamp:
            return repo
        (work / "base.spec").write_text(spec)
        env = {**os.environ, "HOME": str(work)}  # keep rpm's database out of the real HOME
        subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {work}",
                        str(work / "base.spec")], check=True, env=env, capture_output=True)
        staging = work / "repo"
        staging.mkdir()
        for rpm in (work / "RPMS").rglob("*.rpm"):
            shutil.copy2(rpm, staging)
        subprocess.run(["createrepo_c", "--quiet", str(staging)], check=True, env=env,
                       capture_output=True)
        (staging / "spec.sha256").write_text(stamp)
        shutil.rmtree(repo, ignore_errors=True)
        os.replace(staging, repo)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return repo


def _copy_shell(tree: Path) -> list[str]:
    """/bin/sh from the host (resolved) plus the shared libraries it loads; their paths."""
    shell = Path("/bin/sh").resolve()
    paths = [shell, *_libraries(shell)]
    listed = []
    for source in paths:
        target = tree / str(source).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        listed.append(str(source))
    sh = tree / "bin/sh"
    if not sh.exists():
        sh.parent.mkdir(parents=True, exist_ok=True)
        sh.symlink_to(shell)
        listed.append("/bin/sh")
    return listed


def _libraries(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        words = line.replace("=>", " ").split()
        found += [Path(word) for word in words if word.startswith("/")]
    return found
