"""The sandbox's base image layer: Amazon Linux 2023's identity and what its rpm database
provides."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sandbox.machines import image


def provides(layer, capability: str) -> subprocess.CompletedProcess:
    return subprocess.run(["rpm", "--dbpath", str(layer / "var/lib/rpm"), "-q", "--whatprovides",
                           capability], capture_output=True, text=True,
                          env={**os.environ, "HOME": str(layer)})


def test_the_base_layer_is_amazon_linux_2023_with_declared_extras(tmp_path):
    layer = image.ensure(tmp_path, ("nodejs = 18.20.4",), "/opt/chef/bin/chef-solo")
    assert 'ID="amzn"' in (layer / "etc/os-release").read_text()
    assert 'VERSION_ID="2023"' in (layer / "etc/os-release").read_text()
    assert os.readlink(layer / "usr/bin/yum") == "dnf-3"
    assert "skip_if_unavailable=False" in (layer / "etc/dnf/dnf.conf").read_text()
    assert "ec2-user ALL=(ALL) NOPASSWD:ALL" in (
        layer / "etc/sudoers.d/90-cloud-init-users").read_text()
    assert "exec /opt/chef/bin/chef-solo" in (layer / "usr/bin/chef-solo").read_text()
    assert (layer / "usr/bin/systemctl").read_text().startswith("#!/usr/bin/python3\n")
    assert provides(layer, "nodejs").stdout.startswith("system-release-2023")
    listed = subprocess.run(["rpm", "--dbpath", str(layer / "var/lib/rpm"), "-q", "--provides",
                             "system-release"], capture_output=True, text=True,
                            env={**os.environ, "HOME": str(layer)}).stdout.splitlines()
    assert {"nodejs = 18.20.4", "python3 = 3.9.16", "system-release(releasever) = 2023"} <= set(
        listed)
    assert provides(layer, "java-17-amazon-corretto").returncode != 0
    # The same inputs reuse the layer; other ones rebuild it.
    stamp = (layer.parent / "base.sha256").read_text()
    assert image.ensure(tmp_path, ("nodejs = 18.20.4",), "/opt/chef/bin/chef-solo") == layer
    assert (layer.parent / "base.sha256").read_text() == stamp
    image.ensure(tmp_path, (), None)
    assert provides(layer, "nodejs").returncode != 0
    assert not (layer / "usr/bin/chef-solo").exists()


def test_instances_booting_together_build_the_base_layer_once(tmp_path):
    # A server group's instances boot in parallel, each asking for the base layer.
    with ThreadPoolExecutor(3) as pool:
        layers = list(pool.map(lambda _: image.ensure(tmp_path), range(3)))
    assert len(set(layers)) == 1
    assert 'ID="amzn"' in (layers[0] / "etc/os-release").read_text()
    assert [p.name for p in (tmp_path / "machines").iterdir() if p.name.startswith("base-")] == []


def test_the_base_layer_holds_no_password_hash_of_the_host(tmp_path):
    """Its accounts are the host's system accounts, every one locked: the host's /etc/shadow
    (root's hash among its lines) never goes into an image."""
    layer = image.ensure(tmp_path)
    shadow = (layer / "etc/shadow").read_text().splitlines()
    readable = os.access("/etc/shadow", os.R_OK)
    host = set(Path("/etc/shadow").read_text().splitlines()) if readable else set()
    assert not host & set(shadow)
    assert {line.split(":")[1] for line in shadow} == {"!!"}
    assert [line.split(":")[0] for line in shadow] == [
        line.split(":")[0] for line in (layer / "etc/passwd").read_text().splitlines()]
    assert oct((layer / "etc/shadow").stat().st_mode & 0o777) == "0o600"
    assert {line.split(":")[1] for line in (layer / "etc/gshadow").read_text().splitlines()} \
        == {"!"}


def test_fresh_state_dirs_link_the_base_layer_built_once(tmp_path):
    """With the run's cache (tests/conftest.py), a second state dir's layer is the first's files
    hard-linked under folders of its own, owned, marked and stamped as built. The first test's
    content: built once in the run."""
    content = (("nodejs = 18.20.4",), "/opt/chef/bin/chef-solo")
    first = image.ensure(tmp_path / "one", *content)
    second = image.ensure(tmp_path / "two", *content)
    assert first.parent.parent != second.parent.parent
    for path in ("etc/os-release", "usr/bin/systemctl", "var/lib/rpm", "home/ec2-user"):
        one, two = (first / path).lstat(), (second / path).lstat()
        assert (one.st_mode, one.st_uid, one.st_gid) == (two.st_mode, two.st_uid, two.st_gid)
    assert (first / "etc/os-release").stat().st_ino == (second / "etc/os-release").stat().st_ino
    assert first.stat().st_ino != second.stat().st_ino
    cache = Path(os.environ[image.CACHE_ENV])
    assert {oct(p.stat().st_mode & 0o777) for p in (first, second, cache)} == {"0o700"}
    for path in image.HIDDEN:
        assert os.getxattr(second / path, image.OPAQUE) == b"y"
    assert (second.parent / "base.sha256").read_text() == (first.parent / "base.sha256").read_text()
    assert provides(second, "nodejs").stdout.startswith("system-release-2023")
    assert "exec /opt/chef/bin/chef-solo" in (second / "usr/bin/chef-solo").read_text()


def test_a_cache_that_is_not_a_folder_is_not_used(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("not a folder\n")
    monkeypatch.setenv(image.CACHE_ENV, str(tmp_path / "cache"))
    assert image._cache() is None
    monkeypatch.setenv(image.CACHE_ENV, "")
    assert image._cache() is None
