"""Building RPMs: headers, file list and attributes read back with `rpm -qp`, scriptlets,
reproducibility, escaping, rpmlint, the fpm backend's argument list, and `invoke package`."""

from __future__ import annotations

import hashlib
import json
import os
import re
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

# One worker runs the module (an xdist group): its module-scoped `hello` (a package fpm
# builds) is made once.
pytestmark = pytest.mark.xdist_group("package")

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "manifests" / "hello-web.yaml"
EPOCH = 1_700_000_000


# Real fpm: the one on PATH, else the vendored one next to the repository (see Makefile).
FPM = Path(shutil.which("fpm") or ROOT.parent / "shared" / "vendor" / "fpm" / "bin" / "fpm")


def make_settings(dist: Path, **package_options) -> settings_module.Settings:
    """Settings for packaging only: no AWS, so no sandbox needed."""
    options = {"backend": "rpmbuild", "source_date_epoch": EPOCH, "fpm": str(FPM),
               **package_options}
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
    assert query(result["path"], "%{POSTIN}") == 'echo "100% %{name}"\n%post'


def test_bad_manifest_writes_nothing_to_dist(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: bad\nversion: 1.0.0\nsummary: s\nlicense: MIT\n"
                                       "files:\n  - src: missing\n    dest: /opt/x\n")
    dist = tmp_path / "dist"
    with pytest.raises(KilnError, match=r"bad.yaml:6: files\[0\].src"):
        package(make_settings(dist), tmp_path / "bad.yaml")
    assert not dist.exists()


def test_missing_explicit_backend_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither fpm nor rpmbuild
    with pytest.raises(KilnError, match=r"kiln.package.backend: fpm \(fpm\) is not installed"):
        package(make_settings(tmp_path / "dist", backend="fpm", fpm="fpm"), HELLO)


def test_fpm_argument_list(tmp_path):
    manifest = load(HELLO)
    root = tmp_path / "root"
    build.stage(manifest, root, EPOCH)
    scripts = {key: tmp_path / f"{key}.sh" for key in scriptlets(manifest)}
    argv = fpm.fpm_argv(manifest, root, tmp_path / "out.rpm",
                        Provenance(commit="abc123", manifest_digest="d" * 64), scripts, EPOCH,
                        "zstd", None, workdir=tmp_path)

    def values(flag):
        return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]

    assert argv[:5] == ["fpm", "-s", "dir", "-t", "rpm"]
    assert values("--name") == ["hello-web"] and values("--version") == ["1.0.0"]
    assert values("--iteration") == ["1"] and values("--architecture") == ["noarch"]
    assert values("--depends") == ["python3 >= 3.6"]
    options = (tmp_path / "options-0").read_text().splitlines()
    assert "--config-files /etc/hello-web/hello-web.conf" in options
    assert "--directories /opt/hello-web" in options
    assert "--rpm-attr 640,root,hello-web:/etc/hello-web/hello-web.conf" in options
    assert "--rpm-attr 750,hello-web,hello-web:/var/lib/hello-web" in options
    assert values("--after-install") == [str(tmp_path / "post.sh")]
    assert values("--before-install") == [str(tmp_path / "pre.sh")]
    assert values("--rpm-tag") == ["%define _binary_payload w3T0.zstdio", "VCS: git:abc123",
                                   f"DistTag: kiln-manifest-sha256:{'d' * 64}"]
    assert "clamp_mtime_to_source_date_epoch 1" in values("--rpm-rpmbuild-define")
    assert values("--package") == [str(tmp_path / "out.rpm")]
    assert argv[-7:] == ["--chdir", str(root), "--", "etc", "opt", "usr", "var"]


def test_auto_is_rpmbuild_even_with_fpm_installed(tmp_path, monkeypatch):
    """Installing fpm must not change the bytes of a version built with backend `auto`."""
    monkeypatch.setenv("PATH", f"{FPM.parent}{os.pathsep}{os.environ['PATH']}")
    result = package(make_settings(tmp_path / "dist", backend="auto"), HELLO)
    assert result["backend"] == "rpmbuild"


# Header tags that differ between the backends' RPMs, and why (README: "The fpm backend"):
# PREFIXES (fpm's spec always says `Prefix: /`), and so the digests and sizes of the header.
DIFFERENT_TAGS = {"HDRID", "HEADERIMMUTABLE", "LONGSIGSIZE", "SIGSIZE", "PKGID", "SIGMD5",
                  "SHA1HEADER", "SHA256HEADER", "PREFIXES"}


def all_tags(path: str) -> dict[str, str]:
    """Every header tag rpm knows, as `rpm -qp --qf` prints it."""
    names = subprocess.run(["rpm", "--querytags"], capture_output=True, text=True,
                           check=True).stdout.split()
    marker = "\x1e"
    text = query(path, "".join(f"{name}={marker}[%{{{name}}} ]{marker}" for name in names))
    return dict(re.findall(f"([A-Z0-9_]+)={marker}(.*?){marker}", text, re.S))


def assert_same_package(a: str, b: str) -> None:
    """The same file list, modes, owners, flags, mtimes, digests, link targets, classes,
    scriptlets, dependencies and header text: every tag but the known differences."""
    tags_a, tags_b = all_tags(a), all_tags(b)
    assert len(tags_a) > 150 and tags_a.keys() == tags_b.keys()
    different = {tag for tag in tags_a if tags_a[tag] != tags_b[tag]}
    assert different <= DIFFERENT_TAGS, {tag: (tags_a[tag], tags_b[tag])
                                         for tag in different - DIFFERENT_TAGS}


def both_backends(tmp_path: Path, manifest: Path, **options) -> tuple[dict, dict]:
    via_rpmbuild = package(make_settings(tmp_path / "a", backend="rpmbuild", **options),
                           manifest)
    via_fpm = package(make_settings(tmp_path / "b", backend="fpm", **options), manifest)
    return via_rpmbuild, via_fpm


def test_fpm_and_rpmbuild_build_the_same_package(tmp_path):
    via_rpmbuild, via_fpm = both_backends(tmp_path, HELLO)
    assert_same_package(via_rpmbuild["path"], via_fpm["path"])
    for built in (via_rpmbuild, via_fpm):
        result = subprocess.run(["rpmlint", "-r", str(ROOT / "manifests/hello-web.rpmlintrc"),
                                 built["path"]], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_fpm_build_is_byte_for_byte_stable(tmp_path, monkeypatch):
    """No changelog dated today, no Packager from $USER@host, no ~/.rpmmacros: the same inputs
    give the same bytes for another user on another machine."""
    first = package(make_settings(tmp_path / "a", backend="fpm"), HELLO)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".rpmmacros").write_text("%_buildhost evil.example.com\n%packager Mallory\n"
                                     "%vendor Mallory\n%_binary_payload w9.gzdio\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USER", "mallory")
    second = package(make_settings(tmp_path / "b", backend="fpm"), HELLO)
    assert second["sha256"] == first["sha256"]
    assert query(second["path"], "[%{CHANGELOGTIME}]") == ""


def odd_tree(tmp_path: Path) -> Path:
    """A tree as release engineers hand to fpm: odd names, links, modes, an empty directory."""
    app = tmp_path / "app"
    (app / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    (app / "lib" / "python3.11" / "site-packages" / "mod.py").write_text("x = 1\n")
    (app / "lib" / "python3").symlink_to("python3.11")
    (app / "bin").mkdir()
    (app / "bin" / "python").symlink_to("/usr/bin/python3")
    (app / "pages").mkdir()
    for name in ["a b.txt", "café.js", "日本.txt", "%{name}", "[id].js", "*", "?", "{a,b}", "$x",
                 "it's", 'q"d', "back\\slash", "#h", "&", ";", "(p)", "!", "-dash", "100%"]:
        (app / "pages" / name).write_text(f"{name}\n")
    (app / "secrets.env").write_text("KEY=1\n")
    (app / "secrets.env").chmod(0o600)
    (app / "run").write_text("#!/bin/sh\n")
    (app / "run").chmod(0o750)
    (app / "empty").mkdir()
    (app / "conf.d").mkdir()
    (app / "conf.d" / "a.conf").write_text("a = 1\n")
    (tmp_path / "odd.yaml").write_text(
        "name: odd\nversion: 1.0.0\nepoch: 3\nsummary: odd trees\nlicense: MIT\n"
        "url: https://example.com/odd\nvendor: V\nmaintainer: Ops <ops@example.com>\n"
        "replaces:\n  - odd-old < 1.0\n"
        "files:\n  - src: app\n    dest: /opt/odd\n    exclude: [conf.d]\n"
        "  - src: app/run\n    dest: /usr/bin/\n"
        "config_files:\n  - src: app/conf.d\n    dest: /etc/odd/conf.d\n    group: odd\n"
        "scripts:\n  before_install: |\n    echo pre\n  before_upgrade: |\n    echo upgrading\n"
        "  after_remove: |\n    echo gone\n")
    return tmp_path / "odd.yaml"


def test_odd_trees_keep_names_links_modes_and_empty_directories(tmp_path):
    result = package(make_settings(tmp_path / "dist"), odd_tree(tmp_path))
    listing = query(result["path"], "[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} "
                    "%{FILEFLAGS:fflags}|%{FILENAMES}|%{FILELINKTOS}\n]").splitlines()
    by_name = {line.split("|")[1]: line for line in listing}
    pages = {name for name in by_name if name.startswith("/opt/odd/pages/")}
    assert len(pages) == 19 and "/opt/odd/pages/[id].js" in pages
    assert "/opt/odd/pages/back\\slash" in pages and "/opt/odd/pages/%{name}" in pages
    assert by_name["/opt/odd/lib/python3"].endswith("|python3.11")
    assert by_name["/opt/odd/lib/python3"].startswith("l")
    assert by_name["/opt/odd/bin/python"].endswith("|/usr/bin/python3")
    assert not [n for n in by_name if n.startswith("/opt/odd/lib/python3/")]  # not followed
    assert by_name["/opt/odd/secrets.env"].startswith("-rw------- root:root")
    assert by_name["/opt/odd/run"].startswith("-rwxr-x---")
    assert by_name["/usr/bin/run"].startswith("-rwxr-x---")
    assert by_name["/opt/odd/empty"].startswith("drwx")
    assert by_name["/etc/odd/conf.d/a.conf"].startswith("-rw-r--r-- root:odd cn")
    assert not [n for n in by_name if n.startswith("/opt/odd/conf.d")]
    assert query(result["path"], "%{EPOCH} [%{OBSOLETENAME} %{OBSOLETEFLAGS:depflags} "
                 "%{OBSOLETEVERSION}]") == "3 odd-old < 1.0"
    prein = query(result["path"], "%{PREIN}")
    assert "upgrade() {" in prein and "echo upgrading" in prein and "echo pre" in prein
    assert query(result["path"], "%{POSTUN}").startswith('if [ "${1}" -eq 0 ]')


def test_odd_trees_are_packaged_the_same_by_fpm(tmp_path):
    via_rpmbuild, via_fpm = both_backends(tmp_path, odd_tree(tmp_path))
    assert_same_package(via_rpmbuild["path"], via_fpm["path"])


ODD_NAMES = ["a b.txt", "café.js", "日本.txt", "%{name}", "[id].js", "*", "?", "{a,b}", "$x",
             "it's", 'q"d', "back\\slash", "#h", "&", ";", "(p)", "!", "-dash", "100%"]


def test_odd_names_listed_file_by_file(tmp_path):
    """A config directory is listed a file at a time (its directories are not config): every
    name goes through rpm's file-list escaping, in both backends."""
    (tmp_path / "conf").mkdir()
    for name in ODD_NAMES:
        (tmp_path / "conf" / name).write_text(f"{name}\n")
    (tmp_path / "c.yaml").write_text(
        "name: c\nversion: 1.0.0\nsummary: s\nlicense: MIT\nurl: https://e.com\nvendor: V\n"
        "maintainer: M <m@example.com>\n"
        "config_files:\n  - src: conf\n    dest: /etc/c\n")
    via_rpmbuild, via_fpm = both_backends(tmp_path, tmp_path / "c.yaml")
    listing = query(via_rpmbuild["path"], "[%{FILEFLAGS:fflags}|%{FILENAMES}\n]").splitlines()
    assert sorted(listing) == sorted(["|/etc/c"] + [f"cn|/etc/c/{name}" for name in ODD_NAMES])
    assert_same_package(via_rpmbuild["path"], via_fpm["path"])


def test_upgrade_scripts_run_on_upgrade_only(tmp_path):
    """The packaged scriptlets, run by /bin/sh as rpm runs them ($1: 1 on install, 2 on upgrade,
    0 on removal), run each script only when it should."""
    (tmp_path / "f.txt").write_text("x\n")
    (tmp_path / "up.yaml").write_text(
        "name: up\nversion: 1.0.0\nsummary: s\nlicense: MIT\n"
        "files:\n  - src: f.txt\n    dest: /opt/up/f.txt\n"
        "scripts:\n  after_install: |\n    echo install\n  after_upgrade: |\n    echo upgrade\n"
        "  before_remove: |\n    echo remove\n")
    built = package(make_settings(tmp_path / "dist"), tmp_path / "up.yaml")

    def run(tag, arg):
        return subprocess.run(["sh", "-c", query(built["path"], tag), "sh", arg],
                              capture_output=True, text=True, check=True).stdout
    assert (run("%{POSTIN}", "1"), run("%{POSTIN}", "2")) == ("install\n", "upgrade\n")
    assert (run("%{PREUN}", "0"), run("%{PREUN}", "1")) == ("remove\n", "")


def test_elf_in_noarch_names_the_file_and_arch(tmp_path):
    shutil.copy("/bin/true", tmp_path / "tool")
    (tmp_path / "tool.yaml").write_text("name: tool\nversion: 1.0.0\nsummary: s\nlicense: MIT\n"
                                        "files:\n  - src: tool\n    dest: /usr/bin/tool\n")
    for backend in ("rpmbuild", "fpm"):
        with pytest.raises(KilnError) as caught:
            package(make_settings(tmp_path / backend, backend=backend), tmp_path / "tool.yaml")
        assert str(caught.value) == (
            f"{tmp_path / 'tool.yaml'}: arch: noarch, but /usr/bin/tool is an ELF binary for "
            "x86_64 (set arch: x86_64, or arch: auto)")
        assert not (tmp_path / backend).exists()


def test_dirty_tree_is_marked_in_provenance(tmp_path, capsys):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "f.txt").write_text("x\n")
    (tmp_path / "m.yaml").write_text("name: m\nversion: 1.0.0\nsummary: s\nlicense: MIT\n"
                                     "files:\n  - src: f.txt\n    dest: /opt/m/f.txt\n")
    git("add", ".")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "one")
    settings = make_settings(tmp_path / "dist")
    clean = package(settings, tmp_path / "m.yaml")
    assert not clean["commit"].endswith("-dirty")
    (tmp_path / "f.txt").write_text("changed\n")
    dirty = package(settings, tmp_path / "m.yaml")
    assert dirty["commit"] == clean["commit"] + "-dirty"
    assert query(dirty["path"], "%{VCS}") == f"git:{clean['commit']}-dirty"
    assert "uncommitted change" in capsys.readouterr().err
    (tmp_path / "f.txt").write_text("x\n")
    (tmp_path / "new.txt").write_text("untracked\n")
    (tmp_path / "m.yaml").write_text((tmp_path / "m.yaml").read_text() +
                                     "  - src: new.txt\n    dest: /opt/m/new.txt\n")
    assert package(settings, tmp_path / "m.yaml")["commit"].endswith("-dirty")


def test_fpm_takes_a_top_level_path_starting_with_a_dash(tmp_path):
    (tmp_path / "f.txt").write_text("x\n")
    (tmp_path / "d.yaml").write_text("name: d\nversion: 1.0.0\nsummary: s\nlicense: MIT\n"
                                     "url: https://e.com/d\nvendor: V\nmaintainer: M <m@e.com>\n"
                                     "files:\n  - src: f.txt\n    dest: /-odd/f.txt\n")
    via_rpmbuild, via_fpm = both_backends(tmp_path, tmp_path / "d.yaml")
    assert query(via_fpm["path"], "[%{FILENAMES}\n]") == "/-odd/f.txt\n"
    assert_same_package(via_rpmbuild["path"], via_fpm["path"])


def test_fpm_per_path_flags_go_through_chained_options_files(tmp_path, monkeypatch):
    """Per-path flags never reach the argument list: with small options files, several chained
    ones carry 1,000 files owned by a service account."""
    monkeypatch.setattr(fpm, "OPTIONS_FILE_LIMIT", 10_000)
    app = tmp_path / "app"
    for group in range(4):
        folder = app / f"d{group}"
        folder.mkdir(parents=True)
        for index in range(250):
            (folder / f"f{index:03d}.txt").write_text(f"{group} {index}\n")
    (tmp_path / "many.yaml").write_text(
        "name: many\nversion: 1.0.0\nsummary: s\nlicense: MIT\nurl: https://e.com\n"
        "maintainer: M <m@example.com>\n"
        "vendor: V\nfiles:\n  - src: app\n    dest: /opt/many\n    owner: nobody\n"
        "    group: nobody\n")
    via_rpmbuild, via_fpm = both_backends(tmp_path, tmp_path / "many.yaml")
    owners = query(via_fpm["path"], "[%{FILEUSERNAME}\n]").splitlines()
    assert len(owners) == 1005 and set(owners) == {"nobody"}
    assert_same_package(via_rpmbuild["path"], via_fpm["path"])


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


def test_tree_modes_come_from_the_sources_as_with_fpm(tmp_path):
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
    assert "%attr(0664,root,root) /opt/other/data.txt" in lines  # listed file by file
    result = package(make_settings(tmp_path / "dist"), tmp_path / "tree.yaml")
    listing = query(result["path"], "[%{FILEMODES:perms} %{FILEFLAGS:fflags} %{FILENAMES}\n]")
    assert listing.splitlines() == [
        "drwxr-xr-x  /opt/other", "drwxr-xr-x  /opt/other/bin", "-rwxrwxr-x  /opt/other/bin/run",
        "-rw-rw-r--  /opt/other/data.txt", "-rw-r--r-- cn /opt/other/extra.conf",
        "drwxr-xr-x  /opt/tree", "drwxr-xr-x  /opt/tree/bin", "-rwxrwxr-x  /opt/tree/bin/run",
        "-rw-rw-r--  /opt/tree/data.txt"]
    assert stat.S_IMODE((app / "data.txt").stat().st_mode) == 0o664  # sources untouched
    assert stat.S_IMODE((app / "bin" / "run").stat().st_mode) == 0o775
