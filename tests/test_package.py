"""Building RPMs: headers, file list and attributes read back with `rpm -qp`, scriptlets,
reproducibility, escaping, rpmlint, the fpm backend's argument list, and `invoke package`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from cloud import settings as settings_module
from cloud.errors import KilnError
from packager import build, fpm, spec
from packager.build import package
from packager.digests import CACHE_DIR
from packager.manifest import load
from packager.spec import Provenance, scriptlets
from tests.conftest import deep_merge, project_config

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "manifests" / "hello-web.yaml"
EPOCH = 1_700_000_000


def make_settings(dist: Path, **package_options) -> settings_module.Settings:
    """Settings for packaging only: no AWS, so no sandbox needed."""
    options = {"backend": "rpmbuild", "source_date_epoch": EPOCH, **package_options}
    raw = deep_merge(project_config(), {"dist": str(dist), "package": options})
    return settings_module.validate(raw, ["test config"])


def query(path: str | Path, fmt: str) -> str:
    return subprocess.run(["rpm", "-qp", "--qf", fmt, str(path)], capture_output=True,
                          text=True, check=True).stdout


@pytest.fixture(scope="module")
def hello(tmp_path_factory) -> dict:
    return package(make_settings(tmp_path_factory.mktemp("dist")), HELLO)


def test_result_describes_the_rpm(hello):
    path = Path(hello["path"])
    assert path.name == "hello-web-1.0.0-1.noarch.rpm" and path.is_file()
    assert hello["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert hello["nevra"] == "hello-web-1.0.0-1.noarch"
    assert (hello["name"], hello["version"], hello["release"], hello["arch"]) == (
        "hello-web", "1.0.0", "1", "noarch")
    assert hello["manifest_digest"] == load(HELLO).digest
    assert hello["backend"] == "rpmbuild"
    assert hello["commit"] == last_commit_of("manifests/hello-web.yaml", "manifests/hello-web")


def last_commit_of(*paths: str) -> str | None:
    result = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%H", "HEAD", "--",
                             *paths], capture_output=True, text=True, check=False)
    return result.stdout.strip() or None


def test_commit_is_the_last_one_that_changed_the_app():
    manifest = load(HELLO)
    assert build.input_paths(manifest) == ["hello-web", "hello-web.yaml"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip()
    recorded = build.git_commit(manifest.folder, build.input_paths(manifest))
    if head:  # in a git checkout: a commit elsewhere does not move the app's provenance
        assert recorded == last_commit_of("manifests/hello-web.yaml", "manifests/hello-web")


def test_header_records_metadata_and_provenance(hello):
    fields = query(hello["path"], "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{LICENSE}|%{URL}|"
                   "%{VENDOR}|%{PACKAGER}|%{BUILDHOST}|%{BUILDTIME}|%{PAYLOADCOMPRESSOR}|"
                   "%{VCS}|%{DISTTAG}").split("|")
    assert fields[:11] == ["hello-web", "1.0.0", "1", "noarch", "MIT",
                           "https://example.com/hello-web", "Example Corp",
                           "Release Engineering <release@example.com>", "kiln", str(EPOCH),
                           "zstd"]
    commit = hello["commit"]
    assert fields[11] == (f"git:{commit}" if commit else "(none)")
    assert fields[12] == f"kiln-manifest-sha256:{hello['manifest_digest']}"
    requires = query(hello["path"], "[%{REQUIRENAME} %{REQUIREFLAGS:depflags} "
                     "%{REQUIREVERSION}\n]")
    assert "python3 >= 3.6" in requires


def test_file_list_owners_modes_and_flags(hello):
    listing = query(hello["path"], "[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} "
                    "%{FILEFLAGS:fflags} %{FILEMTIMES} %{FILENAMES}\n]")
    assert listing.splitlines() == [
        f"drwxr-xr-x root root  {EPOCH} /etc/hello-web",
        f"-rw-r----- root hello-web cn {EPOCH} /etc/hello-web/hello-web.conf",
        f"drwxr-xr-x root root  {EPOCH} /opt/hello-web",
        f"-rwxr-xr-x root root  {EPOCH} /opt/hello-web/server.py",
        f"-rw-r--r-- root root  {EPOCH} /usr/lib/systemd/system/hello-web.service",
        f"drwxr-x--- hello-web hello-web  {EPOCH} /var/lib/hello-web",
    ]


def test_generated_unit_is_packaged(hello):
    unit = load(HELLO).service_unit.encode()
    digests = query(hello["path"], "[%{FILEDIGESTS} %{FILENAMES}\n]")
    assert f"{hashlib.sha256(unit).hexdigest()} /usr/lib/systemd/system/hello-web.service" \
        in digests


def test_scriptlets_create_the_account_and_handle_the_unit(hello):
    scripts = subprocess.run(["rpm", "-qp", "--scripts", hello["path"]], capture_output=True,
                             text=True, check=True).stdout
    assert "preinstall scriptlet" in scripts and "useradd -r -g hello-web" in scripts
    assert "postinstall scriptlet" in scripts and "systemctl enable hello-web.service" in scripts
    assert "preuninstall scriptlet" in scripts and "disable hello-web.service" in scripts
    assert "postuninstall scriptlet" in scripts and "try-restart hello-web.service" in scripts


def test_passes_rpmlint_with_its_rpmlintrc(hello):
    result = subprocess.run(["rpmlint", "-r", str(ROOT / "manifests/hello-web.rpmlintrc"),
                             hello["path"]], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors, 0 warnings" in result.stdout


def test_same_inputs_give_identical_bytes(hello, tmp_path):
    again = package(make_settings(tmp_path / "dist"), HELLO)
    assert again["sha256"] == hello["sha256"]
    assert Path(again["path"]).read_bytes() == Path(hello["path"]).read_bytes()


def test_rebuild_replaces_the_file_in_dist(tmp_path):
    settings = make_settings(tmp_path / "dist")
    first = package(settings, HELLO)
    Path(first["path"]).write_bytes(b"stale")
    second = package(settings, HELLO)
    assert second["sha256"] == first["sha256"]
    assert hashlib.sha256(Path(second["path"]).read_bytes()).hexdigest() == first["sha256"]
    assert [p.name for p in (tmp_path / "dist").iterdir()
            if p.name != CACHE_DIR] == [Path(first["path"]).name]


def test_prerelease_version_and_gzip(tmp_path):
    result = package(make_settings(tmp_path / "dist", compression="gzip", compression_level=9),
                     HELLO, version="2.0.0-rc.1")
    assert Path(result["path"]).name == "hello-web-2.0.0~rc.1-1.noarch.rpm"
    assert (result["version"], result["rpm_version"]) == ("2.0.0-rc.1", "2.0.0~rc.1")
    assert query(result["path"], "%{VERSION} %{PAYLOADCOMPRESSOR} %{PAYLOADFLAGS}") == \
        "2.0.0~rc.1 gzip 9"


def test_values_are_escaped_for_the_spec(tmp_path):
    (tmp_path / "app.txt").write_text("data\n")
    (tmp_path / "odd.yaml").write_text(
        "name: odd\nversion: 0.1.0\nsummary: 100% sure %{_topdir}\nlicense: MIT\n"
        "description: |\n  Uses %{name} literally.\n  %files is not a section\n"
        "files:\n  - src: app.txt\n    dest: /opt/odd/app.txt\n"
        "scripts:\n  after_install: |\n    echo \"100% %{name}\"\n    %post\n")
    result = package(make_settings(tmp_path / "dist"), tmp_path / "odd.yaml")
    assert query(result["path"], "%{SUMMARY}") == "100% sure %{_topdir}"
    assert query(result["path"], "%{DESCRIPTION}") == \
        "Uses %{name} literally.\n %files is not a section"
    assert query(result["path"], "%{POSTIN}") == 'echo "100% %{name}"\n%post\n'


def test_bad_manifest_writes_nothing_to_dist(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: bad\nversion: 1.0.0\nsummary: s\nlicense: MIT\n"
                                       "files:\n  - src: missing\n    dest: /opt/x\n")
    dist = tmp_path / "dist"
    with pytest.raises(KilnError, match=r"bad.yaml:6: files\[0\].src"):
        package(make_settings(dist), tmp_path / "bad.yaml")
    assert not dist.exists()


def test_missing_explicit_backend_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither fpm nor rpmbuild
    with pytest.raises(KilnError, match="kiln.package.backend: fpm is not on PATH"):
        package(make_settings(tmp_path / "dist", backend="fpm"), HELLO)


def test_fpm_argument_list(tmp_path):
    manifest = load(HELLO)
    root = tmp_path / "root"
    build.stage(manifest, root, EPOCH)
    scripts = {key: tmp_path / f"{key}.sh" for key in scriptlets(manifest)}
    argv = fpm.fpm_argv(manifest, root, tmp_path / "out.rpm",
                        Provenance(commit="abc123", manifest_digest="d" * 64), scripts, EPOCH,
                        "zstd", None)

    def values(flag):
        return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]

    assert argv[:5] == ["fpm", "-s", "dir", "-t", "rpm"]
    assert values("--name") == ["hello-web"] and values("--version") == ["1.0.0"]
    assert values("--iteration") == ["1"] and values("--architecture") == ["noarch"]
    assert values("--depends") == ["python3 >= 3.6"]
    assert values("--config-files") == ["/etc/hello-web/hello-web.conf"]
    assert values("--directories") == ["/etc/hello-web", "/opt/hello-web", "/var/lib/hello-web"]
    assert "0640,root,hello-web:/etc/hello-web/hello-web.conf" in values("--rpm-attr")
    assert "0750,hello-web,hello-web:/var/lib/hello-web" in values("--rpm-attr")
    assert values("--after-install") == [str(tmp_path / "post.sh")]
    assert values("--before-install") == [str(tmp_path / "pre.sh")]
    assert values("--rpm-tag") == ["%define _binary_payload w3T0.zstdio", "VCS: git:abc123",
                                   f"DistTag: kiln-manifest-sha256:{'d' * 64}"]
    assert "clamp_mtime_to_source_date_epoch 1" in values("--rpm-rpmbuild-define")
    assert values("--package") == [str(tmp_path / "out.rpm")]
    assert argv[-6:] == ["--chdir", str(root), "etc", "opt", "usr", "var"]


FAKE_FPM = """#!/bin/sh
# A fake fpm: records its argv (one per line) and writes a placeholder package.
printf '%s\\n' "$@" > "$FAKE_FPM_LOG"
while [ $# -gt 0 ]; do
  if [ "$1" = --package ]; then printf 'fake rpm\\n' > "$2"; fi
  shift
done
"""


def test_auto_selects_fpm_on_path_and_invokes_it(tmp_path, monkeypatch):
    """FAKE fpm: fpm is not installable here, so a stand-in script on PATH records its argv.

    It proves that backend `auto` picks fpm when it is on PATH and runs it with the argument
    list from fpm_argv (no shell), with SOURCE_DATE_EPOCH and a private work dir.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "fpm").write_text(FAKE_FPM + 'env > "$FAKE_FPM_LOG.env"\n')
    (bin_dir / "fpm").chmod(0o755)
    log = tmp_path / "argv.txt"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_FPM_LOG", str(log))
    result = package(make_settings(tmp_path / "dist", backend="auto"), HELLO)
    assert result["backend"] == "fpm"
    assert Path(result["path"]).read_bytes() == b"fake rpm\n"
    argv = log.read_text().splitlines()
    assert argv[:4] == ["-s", "dir", "-t", "rpm"] and "--workdir" in argv
    assert argv[argv.index("--name") + 1] == "hello-web"
    assert argv[argv.index("--rpm-summary") + 1] == "Tiny HTTP service that reports its version"
    env = (tmp_path / "argv.txt.env").read_text()
    assert f"SOURCE_DATE_EPOCH={EPOCH}" in env


@pytest.mark.skipif(shutil.which("fpm") is None,
                    reason="fpm is not installed (not installable on this machine)")
def test_fpm_and_rpmbuild_build_the_same_package(tmp_path):
    via_rpmbuild = package(make_settings(tmp_path / "a", backend="rpmbuild"), HELLO)
    via_fpm = package(make_settings(tmp_path / "b", backend="fpm"), HELLO)
    fmt = ("%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{VCS} %{DISTTAG}\n"
           "[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILEFLAGS:fflags} "
           "%{FILEDIGESTS} %{FILENAMES}\n][%{REQUIRENAME} %{REQUIREVERSION}\n]")
    assert query(via_fpm["path"], fmt) == query(via_rpmbuild["path"], fmt)
    for tag in ("%{PREIN}", "%{POSTIN}", "%{PREUN}", "%{POSTUN}"):
        assert query(via_fpm["path"], tag) == query(via_rpmbuild["path"], tag)


def test_invoke_package_json(run_invoke, tmp_path):
    result = run_invoke("package", "--json", "--version", "1.1.0",
                        overrides={"package": {"source_date_epoch": EPOCH}}, check=True)
    data = json.loads(result.stdout)
    assert {"path", "name", "version", "release", "arch", "sha256"} <= set(data)
    assert (data["name"], data["version"], data["release"], data["arch"]) == (
        "hello-web", "1.1.0", "1", "noarch")
    path = Path(data["path"])
    assert path == tmp_path / "dist" / "hello-web-1.1.0-1.noarch.rpm"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == data["sha256"]


def test_invoke_package_bad_version_is_one_line(run_invoke, tmp_path):
    result = run_invoke("package", "--version", "1.1")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "kiln: manifests/hello-web.yaml: --version: '1.1' is not a semantic version (X.Y.Z)"]
    assert not (tmp_path / "dist").exists()


def test_hello_web_app_serves_its_pages(tmp_path):
    import socket
    import urllib.request

    from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "hello-web.conf"
    config.write_text(f"[server]\nhost = 127.0.0.1\nport = {port}\ngreeting = Hi there\n")
    server = subprocess.Popen(["python3", str(ROOT / "manifests/hello-web/app/server.py"),
                               "--config", str(config)], stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for attempt in Retrying(retry=retry_if_exception_type(OSError), wait=wait_fixed(0.1),
                                stop=stop_after_delay(10), reraise=True):
            with attempt:
                page = urllib.request.urlopen(f"{base}/", timeout=2).read().decode()
        health = json.loads(urllib.request.urlopen(f"{base}/health", timeout=2).read())
    finally:
        server.terminate()
        server.wait(timeout=5)
    assert page.startswith("Hi there (version ")
    assert health["status"] == "ok" and health["name"] == "hello-web"


def test_elf_files_keep_their_file_color(tmp_path):
    """Kiln's small libmagic database still tells rpm an ELF file's word size (multilib)."""
    shutil.copy("/bin/true", tmp_path / "tool")
    (tmp_path / "text.txt").write_text("plain\n")
    (tmp_path / "tool.yaml").write_text(
        "name: tool\nversion: 1.0.0\nsummary: s\nlicense: MIT\narch: x86_64\nfiles:\n"
        "  - src: tool\n    dest: /usr/bin/kiln-tool\n  - src: text.txt\n"
        "    dest: /usr/share/kiln-tool/text.txt\n")
    result = package(make_settings(tmp_path / "dist"), tmp_path / "tool.yaml")
    colors = query(result["path"], "[%{FILECOLORS} %{FILENAMES}\n]").splitlines()
    assert colors == ["2 /usr/bin/kiln-tool", "0 /usr/share/kiln-tool/text.txt"]


def test_tree_modes_come_from_the_staged_copy_not_the_sources(tmp_path):
    app = tmp_path / "app"
    (app / "bin").mkdir(parents=True)
    (app / "data.txt").write_text("data\n")
    (app / "bin" / "run").write_text("#!/bin/sh\n")
    (app / "data.txt").chmod(0o664)  # a umask 002 checkout
    (app / "bin" / "run").chmod(0o775)
    (tmp_path / "extra.conf").write_text("x = 1\n")
    (tmp_path / "tree.yaml").write_text(
        "name: tree\nversion: 1.0.0\nsummary: s\nlicense: MIT\nfiles:\n"
        "  - src: app\n    dest: /opt/tree\n  - src: app\n    dest: /opt/other\n"
        "config_files:\n  - src: extra.conf\n    dest: /opt/other/extra.conf\n")
    manifest = load(tmp_path / "tree.yaml")
    lines = spec.file_lines(manifest.entries)
    assert "%attr(-,root,root) /opt/tree" in lines  # one recursive line
    assert "%config(noreplace) %attr(0644,root,root) /opt/other/extra.conf" in lines
    assert "%attr(0644,root,root) /opt/other/data.txt" in lines  # listed file by file
    result = package(make_settings(tmp_path / "dist"), tmp_path / "tree.yaml")
    listing = query(result["path"], "[%{FILEMODES:perms} %{FILEFLAGS:fflags} %{FILENAMES}\n]")
    assert listing.splitlines() == [
        "drwxr-xr-x  /opt/other", "drwxr-xr-x  /opt/other/bin", "-rwxr-xr-x  /opt/other/bin/run",
        "-rw-r--r--  /opt/other/data.txt", "-rw-r--r-- cn /opt/other/extra.conf",
        "drwxr-xr-x  /opt/tree", "drwxr-xr-x  /opt/tree/bin", "-rwxr-xr-x  /opt/tree/bin/run",
        "-rw-r--r--  /opt/tree/data.txt"]
    assert stat.S_IMODE((app / "data.txt").stat().st_mode) == 0o664  # sources untouched
    assert stat.S_IMODE((app / "bin" / "run").stat().st_mode) == 0o775
