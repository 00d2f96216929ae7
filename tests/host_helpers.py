"""A host with a history, and a package to bake: for the tests of what sandbox machines take from
the host.

`host_with_history` makes this host one where dnf has run as root (as any Fedora or RHEL host
has from its first day), a log was written and a cache filled under /var, and somebody left
files in /opt and /var/tmp; after the test it removes what it made, and only that.
`hello_rpm(folder)` builds a small noarch package; `package_layer(folder)` is a read-only layer
holding it at /srv/kiln-hello.rpm, for a machine to install it from. `var_tmp_state` is a
sandbox state dir under the host's /var/tmp, which every local user can reach.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

MARK = "kiln-host-leftover"
# What the fixture writes itself; everything else it removes is what its dnf run made.
WRITTEN = (f"/var/log/{MARK}.log", f"/var/cache/dnf/{MARK}-0123456789abcdef",
           f"/var/lib/dnf/{MARK}", f"/var/tmp/{MARK}", f"/opt/{MARK}")
# Where dnf run as root writes: its logs, its cache, its history.
DNF_FILES = ("/var/log/dnf.log", "/var/log/dnf.librepo.log", "/var/log/dnf.rpm.log",
             "/var/log/hawkey.log")
DNF_DIRS = ("/var/cache/dnf", "/var/lib/dnf")
HELLO_SPEC = """\
Name: kiln-hello
Version: 1.0
Release: 1
Summary: a greeting
License: MIT
BuildArch: noarch

%description
A greeting in /opt/hello.

%install
mkdir -p %{buildroot}/opt/hello
echo hello > %{buildroot}/opt/hello/greeting

%files
/opt/hello/greeting
"""


def _dnf_made() -> set[str]:
    found = {path for path in DNF_FILES if os.path.lexists(path)}
    for folder in DNF_DIRS:
        if os.path.isdir(folder):
            found |= {folder, *(os.path.join(folder, name) for name in os.listdir(folder))}
    return found


@pytest.fixture
def host_with_history():
    """This host, after dnf ran on it as root and a log, a cache and other files were left."""
    if os.geteuid() != 0:
        pytest.skip("making a host's leftovers needs root")  # CI runs as root
    # Only a run killed mid-test leaves these (the tests that use this fixture share one xdist
    # group, so no other is running): they are ours by name, and the host's history must not
    # decide a test's outcome.
    for path in sorted(WRITTEN, reverse=True):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
    before = _dnf_made()
    try:
        # No repository (an empty reposdir): dnf logs, caches and leaves without the network.
        with tempfile.TemporaryDirectory() as empty:
            subprocess.run(["dnf", "-q", f"--setopt=reposdir={empty}", "--releasever=2023",
                            "repoquery"], capture_output=True, timeout=120)
        if "/var/log/dnf.log" not in before and os.path.exists("/var/log/dnf.log"):
            with open("/var/log/dnf.log", "a") as log:  # ours to write: this run made it
                log.write(f"{MARK}: the host's own dnf run\n")
        _write(f"/var/log/{MARK}.log", 0o600)
        _write(f"/var/cache/dnf/{MARK}-0123456789abcdef/repodata/repomd.xml", 0o644)
        _write(f"/var/lib/dnf/{MARK}", 0o644)
        _write(f"/var/tmp/{MARK}", 0o644)
        _write(f"/opt/{MARK}", 0o644)
        yield MARK
    finally:
        for path in sorted((_dnf_made() - before) | set(WRITTEN), reverse=True):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                os.unlink(path)


@pytest.fixture
def var_tmp_state(tmp_path_factory):
    """A fresh state dir in /var/tmp, 0755 (a checkout's .sandbox, or a Jenkins workspace under
    /var). After the test its machines are ended and the folder moves into this run's own
    temporary folder, where pytest removes it with the others: deleting a base layer's
    thousands of folders takes seconds. Where it cannot move (another filesystem), it goes."""
    from sandbox.machines import instances as machines

    folder = Path(tempfile.mkdtemp(prefix="kiln-state-", dir="/var/tmp"))
    folder.chmod(0o755)
    yield folder
    machines.terminate_all(folder)
    try:
        os.rename(folder, tmp_path_factory.mktemp("var-tmp-state") / folder.name)
    except OSError:
        subprocess.run(["rm", "-rf", "--", str(folder)], check=False)


def _write(path: str, mode: int) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(f"{MARK}: {path}\n")
    os.chmod(path, mode)


def hello_rpm(folder: Path) -> Path:
    """kiln-hello-1.0-1.noarch.rpm, built in `folder`."""
    spec = folder / "kiln-hello.spec"
    spec.write_text(HELLO_SPEC)
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {folder}", str(spec)],
                   check=True, capture_output=True, env={**os.environ, "HOME": str(folder)})
    return next((folder / "RPMS").rglob("*.rpm"))


def package_layer(folder: Path) -> Path:
    """A layer holding kiln-hello's package at /srv/kiln-hello.rpm."""
    layer = folder / "layer"
    (layer / "srv").mkdir(parents=True)
    shutil.copy(hello_rpm(folder), layer / "srv" / "kiln-hello.rpm")
    return layer
