"""A real dnf client installs the example app from the S3 repository served by the sandbox.

dnf runs with its own HOME (rpm's database path), config, reposdir and cache, into an installroot
under the test's temp dir, with gpgcheck=1 and repo_gpgcheck=1, and reads the repository with
anonymous HTTPS GETs (the bucket policy grants them, as for dnf on a bake instance), trusting
the sandbox's CA as a bake instance does (sslcacert; AWS's certificates need none). An empty
installroot has no shell, so a small base package (built here) brings /bin/sh and recording
stand-ins for useradd, groupadd, getent and systemctl, which cannot exist in an installroot.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cloud.target import connect
from packager import repo
from packager.build import package
from tests.repo_helpers import build_base, make_lock_table, make_repo_bucket

ROOT = Path(__file__).resolve().parent.parent
DNF_CONF = """\
[main]
gpgcheck=1
repo_gpgcheck=1
installonly_limit=3
install_weak_deps=0
keepcache=0
plugins=0
reposdir={reposdir}
cachedir={work}/cache
logdir={work}/log
persistdir={work}/persist
sslcacert={ca}
"""


@pytest.fixture(autouse=True)
def end_gpg_agents(tmp_path):
    """dnf's repo_gpgcheck starts a gpg-agent per keyring that outlives dnf: end this test's."""
    yield
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            if args[0].endswith(b"gpg-agent") and str(tmp_path).encode() in b" ".join(args):
                os.kill(int(cmdline.parent.name), signal.SIGTERM)


class Dnf:
    def __init__(self, work: Path):
        self.work = work
        self.root = work / "installroot"
        self.home = work / "home"
        self.reposdir = work / "repos.d"
        for folder in (self.root, self.home, self.reposdir):
            folder.mkdir(parents=True)
        # Debian's rpm keeps its database under $HOME: point it inside the installroot.
        (self.home / ".rpmmacros").write_text("%_dbpath /var/lib/rpm\n")
        self.conf = work / "dnf.conf"
        self.conf.write_text(DNF_CONF.format(reposdir=self.reposdir, work=work,
                                             ca=os.environ["AWS_CA_BUNDLE"]))
        self.env = {"HOME": str(self.home), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                    "LANG": "C.UTF-8"}

    def run(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["dnf", "-y", "-c", str(self.conf), "--installroot", str(self.root),
             "--releasever", "9", "--setopt", f"reposdir={self.reposdir}", "--refresh", *args],
            capture_output=True, text=True, env=self.env, timeout=300)
        assert result.returncode == 0, f"dnf {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def rpm_query(self, name: str) -> str:
        return subprocess.run(["rpm", "--root", str(self.root), "--dbpath", "/var/lib/rpm",
                               "-q", name], capture_output=True, text=True,
                              env=self.env).stdout.strip()


def http_get(url: str) -> tuple[int, bytes]:
    try:
        trust = ssl.create_default_context(cafile=os.environ["AWS_CA_BUNDLE"])
        with urllib.request.urlopen(url, timeout=10, context=trust) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def app_folder(tmp_path: Path, greeting: str) -> Path:
    """A copy of the example app's manifest folder whose default config says `greeting`."""
    folder = tmp_path / f"manifest-{time.time_ns()}"
    folder.mkdir()
    shutil.copy(ROOT / "manifests/hello-web.yaml", folder)
    shutil.copytree(ROOT / "manifests/hello-web", folder / "hello-web")
    conf = folder / "hello-web/hello-web.conf"
    conf.write_text(conf.read_text().replace("Hello from hello-web", greeting))
    return folder / "hello-web.yaml"


@pytest.mark.slow
def test_dnf_installs_and_upgrades_the_app_from_s3(admin_aws, kiln_settings, tmp_path):
    suffix = time.time_ns()
    config = {"repo": {"bucket": f"kiln-repo-123456789012-d{suffix}",
                       "lock_table": f"kiln-locks-{suffix}"}}
    make_repo_bucket(admin_aws, config["repo"]["bucket"])
    make_lock_table(admin_aws, config["repo"]["lock_table"])
    settings = kiln_settings(**config)
    aws = connect(settings)

    # Without a policy granting it, an anonymous GET of a private object is refused.
    private = f"kiln-repo-private-{suffix}"
    admin_aws.client("s3").create_bucket(Bucket=private)
    admin_aws.client("s3").put_object(Bucket=private, Key="x", Body=b"x")
    endpoint = aws.client("s3").meta.endpoint_url
    assert http_get(f"{endpoint}/{private}/x")[0] == 403

    repo.publish(aws, build_base(tmp_path))
    first = package(settings, ROOT / "manifests/hello-web.yaml", "1.0.0")
    repo.publish(aws, first["path"])

    status, repo_file = http_get(repo.repo_file_url(aws))
    assert status == 200
    dnf = Dnf(tmp_path / "dnf")
    (dnf.reposdir / "kiln.repo").write_bytes(repo_file)

    installed = dnf.run("install", "kiln-test-base", "hello-web")
    assert "Importing GPG key" in installed.stdout + installed.stderr
    assert dnf.rpm_query("hello-web") == "hello-web-1.0.0-1.noarch"
    assert (dnf.root / "opt/hello-web/server.py").exists()
    tools = (dnf.root / "var/log/kiln-base-tools.log").read_text()
    assert "groupadd -r hello-web" in tools and "useradd -r -g hello-web" in tools
    assert "systemctl enable hello-web.service" in tools  # %post on first install

    conf = dnf.root / "etc/hello-web/hello-web.conf"
    conf.write_text(conf.read_text().replace("port = 8080", "port = 9090"))
    (dnf.root / "var/log/kiln-base-tools.log").write_text("")

    second = package(settings, app_folder(tmp_path, "Hello from 1.1.0"), "1.1.0")
    repo.publish(aws, second["path"])
    dnf.run("upgrade", "hello-web")
    assert dnf.rpm_query("hello-web") == "hello-web-1.1.0-1.noarch"
    assert "port = 9090" in conf.read_text(), "the edited config was replaced"
    rpmnew = conf.with_name("hello-web.conf.rpmnew")
    assert rpmnew.exists() and "Hello from 1.1.0" in rpmnew.read_text()
    tools = (dnf.root / "var/log/kiln-base-tools.log").read_text()
    assert "getent passwd hello-web" in tools  # %pre ran again on upgrade
    assert "systemctl enable" not in tools  # %post's first-install branch did not


@pytest.mark.slow
def test_dnf_refuses_a_repo_whose_signature_does_not_match(admin_aws, kiln_settings, tmp_path):
    suffix = time.time_ns()
    config = {"repo": {"bucket": f"kiln-repo-123456789012-x{suffix}",
                       "lock_table": f"kiln-locks-{suffix}"}}
    make_repo_bucket(admin_aws, config["repo"]["bucket"])
    make_lock_table(admin_aws, config["repo"]["lock_table"])
    aws = connect(kiln_settings(**config))
    repo.publish(aws, build_base(tmp_path))
    target = repo.Repo.of(aws)
    body = target.get(repo.REPOMD)[0]
    target.put(repo.REPOMD, body.replace(b"<revision>", b"<revision>1"), "application/xml")
    dnf = Dnf(tmp_path / "dnf")
    (dnf.reposdir / "kiln.repo").write_bytes(http_get(repo.repo_file_url(aws))[1])
    result = subprocess.run(
        ["dnf", "-y", "-c", str(dnf.conf), "--installroot", str(dnf.root), "--releasever", "9",
         "--setopt", f"reposdir={dnf.reposdir}", "install", "kiln-test-base"],
        capture_output=True, text=True, env=dnf.env, timeout=300)
    assert result.returncode != 0
    assert "signature" in (result.stdout + result.stderr).lower()
    assert not (dnf.root / "bin/sh").exists()
