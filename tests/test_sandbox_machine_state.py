"""An instance starts from its image, not from the host's leftovers: its state folders (/var with
its logs, caches, dnf's and rpm's databases and /var/tmp; /tmp, /run, homes, /opt) are the base
image's, as Amazon Linux 2023 ships them; the host shares only what boot.HOST_SHARED lists. So an
image baked on a host with a history holds the same files as one baked on a host without."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from sandbox import userns
from sandbox.machines import boot, image, images
from sandbox.machines import instances as machines
from tests.host_helpers import MARK, package_layer

# One at a time: both change this host's /var (host_with_history) and read what it holds.
pytestmark = pytest.mark.xdist_group("host-history")

INSTANCE = "i-0000000000000ba4e"
STATE_FOLDERS = ("/var", "/tmp", "/run", "/home", "/root", "/opt")


@contextmanager
def machine(state: Path, layers=()):
    """A running machine of `layers` over the base image; yields a function that runs a shell
    command in it as ec2-user."""
    machines.launch(state, INSTANCE, "10.0.0.9", layers=layers)

    def run(command: str) -> subprocess.CompletedProcess:
        enter = machines.enter_command(state, INSTANCE)
        return subprocess.run([*enter, "sh", "-c", command], capture_output=True, text=True,
                              timeout=120)

    try:
        yield run
    finally:
        machines.terminate_all(state)


def test_an_instance_starts_from_the_images_state_folders_not_the_hosts(host_with_history,
                                                                        tmp_path):
    base = image.ensure(tmp_path)
    with machine(tmp_path) as run:
        shown = run("sudo -n find " + " ".join(STATE_FOLDERS) + " -xdev")
        dnf_log = run("test -e /var/log/dnf.log")
    assert shown.returncode == 0, shown.stderr
    seen = set(shown.stdout.split())
    assert not [path for path in seen if MARK in path]
    assert dnf_log.returncode != 0  # the host's (dnf ran there) is not the instance's
    # /var is the base image's, plus what the boot and cloud-init wrote there.
    shipped = {"/" + str(path.relative_to(base)) for path in (base / "var").rglob("*")}
    written = {path for path in seen - shipped if path.startswith("/var/")}
    assert {path for path in written
            if not path.startswith(("/var/lib/cloud/", "/var/log/journal/"))} == set()
    assert {"/var/log", "/var/cache", "/var/lib/dnf", "/var/lib/rpm", "/var/tmp"} <= shipped


def test_the_host_shares_only_its_programs_and_libraries():
    assert set(boot.HOST_SHARED) <= {"usr", "etc", "bin", "sbin", "lib", "lib32", "lib64",
                                     "libx32"}
    assert all(reason.strip() for reason in boot.HOST_SHARED.values())


def _bake(state: Path, layer: Path, image_id: str) -> list[tuple]:
    """What a bake does to a machine (dnf installs a package as root, then empties its cache),
    then CreateImage's capture; the new layer's files: path, kind and mode, owner."""
    with machine(state, [layer]) as run:
        done = run("sudo -n dnf -y -q install /srv/kiln-hello.rpm && sudo -n dnf -q clean all")
        assert done.returncode == 0, done.stdout + done.stderr
        [top, *_] = images.capture(state, image_id, INSTANCE, machines.upper(state, INSTANCE))
    return _files(images.layers_dir(state) / top)


def _files(top: Path) -> list[tuple]:
    found = []
    for folder, names, files in os.walk(top):
        for name in names + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            found.append((os.path.relpath(path, top), info.st_mode, info.st_uid, info.st_gid,
                          info.st_rdev))
    return sorted(found)


def _holds(top: Path, text: str) -> list[str]:
    """The files of a layer whose content holds `text`."""
    return [str(path) for path in top.rglob("*")
            if path.is_file() and not path.is_symlink() and text.encode() in path.read_bytes()]


def test_two_bakes_on_hosts_with_different_histories_make_the_same_files(tmp_path, request):
    layer = package_layer(tmp_path)
    before = _bake(tmp_path / "first", layer, "ami-0000000000000f1a5")
    request.getfixturevalue("host_with_history")  # dnf ran on the host, a log, a cache
    after = _bake(tmp_path / "second", layer, "ami-0000000000000f1a6")
    assert after == before
    root = userns.instance_ids() or (0, 0)  # the instance's root, as the host sees it
    assert ("opt/hello/greeting", 0o100644, *root, 0) in after
    host_log = Path("/var/log/dnf.log")
    second = images.layers_dir(tmp_path / "second")
    assert _holds(second, MARK) == []
    if host_log.is_file() and host_log.stat().st_size:
        [top] = list(second.iterdir())
        first_line = host_log.read_text().splitlines()[0]
        assert _holds(top, first_line) == []

