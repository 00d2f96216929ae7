"""The manifest loader: expansion of the example app, version mapping, and every bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import semver

from cloud.errors import KilnError
from packager.manifest import load, rpm_version

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "manifests" / "hello-web.yaml"

GOOD = """\
name: demo
version: 1.2.3
summary: demo app
license: MIT
files:
  - src: app
    dest: /opt/demo
  - src: run.sh
    dest: /usr/bin/demo
config_files:
  - src: demo.conf
    dest: /etc/demo.conf
    mode: "0640"
    group: demo
"""


@pytest.fixture
def project(tmp_path):
    """A manifest folder with an app tree, a script and a config file."""
    (tmp_path / "app" / "lib").mkdir(parents=True)
    (tmp_path / "app" / "main.py").write_text("print('hi')\n")
    (tmp_path / "app" / "lib" / "util.py").write_text("X = 1\n")
    (tmp_path / "run.sh").write_text("#!/bin/sh\nexec python3 /opt/demo/main.py\n")
    (tmp_path / "run.sh").chmod(0o755)
    (tmp_path / "demo.conf").write_text("port = 1\n")

    def write(text: str = GOOD) -> Path:
        path = tmp_path / "demo.yaml"
        path.write_text(text)
        return path

    return write


def error_of(path: Path, version: str | None = None) -> str:
    with pytest.raises(KilnError) as caught:
        load(path, version)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_hello_web_expands_to_files_config_dirs_and_unit():
    manifest = load(HELLO)
    assert (manifest.name, manifest.version, manifest.rpm_version) == ("hello-web", "1.0.0",
                                                                       "1.0.0")
    assert (manifest.iteration, manifest.arch) == ("1", "noarch")
    by_dest = {entry.dest: entry for entry in manifest.entries}
    assert by_dest["/opt/hello-web"].kind == "dir"
    assert by_dest["/opt/hello-web/server.py"].mode == 0o755  # executable source stays so
    config = by_dest["/etc/hello-web/hello-web.conf"]
    assert (config.kind, config.mode, config.group) == ("config", 0o640, "hello-web")
    state = by_dest["/var/lib/hello-web"]
    assert (state.kind, state.mode, state.owner) == ("dir", 0o750, "hello-web")
    unit = by_dest["/usr/lib/systemd/system/hello-web.service"]
    assert b"User=hello-web" in unit.content and b"ExecStart=/usr/bin/python3" in unit.content
    assert set(manifest.scripts) == {"after_install", "before_remove"}
    assert manifest.user.name == "hello-web" and manifest.user.system


def test_digest_is_stable_and_follows_file_content(project, tmp_path):
    path = project()
    first = load(path).digest
    assert load(path).digest == first and len(first) == 64
    (tmp_path / "app" / "lib" / "util.py").write_text("X = 2\n")
    assert load(path).digest != first


def test_directory_src_is_packaged_recursively(project):
    manifest = load(project())
    dests = [entry.dest for entry in manifest.entries]
    assert dests == ["/etc/demo.conf", "/opt/demo", "/opt/demo/lib", "/opt/demo/lib/util.py",
                     "/opt/demo/main.py", "/usr/bin/demo"]
    modes = {entry.dest: entry.mode for entry in manifest.entries}
    assert modes["/usr/bin/demo"] == 0o755 and modes["/opt/demo/main.py"] == 0o644


def test_version_override_wins(project):
    manifest = load(project(), version="2.0.0-rc.1")
    assert (manifest.version, manifest.rpm_version) == ("2.0.0-rc.1", "2.0.0~rc.1")
    assert manifest.filename == "demo-2.0.0~rc.1-1.noarch.rpm"


@pytest.mark.parametrize(("version", "expected"), [
    ("1.2.3", "1.2.3"),
    ("2.0.0-rc.1", "2.0.0~rc.1"),
    ("1.0.0-alpha-1", "1.0.0~alpha_1"),
    ("1.2.3+build.5", "1.2.3+build.5"),
    ("1.2.3-beta.2+sha.abc-def", "1.2.3~beta.2+sha.abc_def"),
])
def test_rpm_version_mapping(version, expected):
    assert rpm_version(version) == expected


def rpm_vercmp(left: str, right: str) -> int:
    script = f'%{{lua: print(rpm.vercmp("{left}", "{right}"))}}'
    return int(subprocess.run(["rpm", "--eval", script], capture_output=True, text=True,
                              check=True).stdout.strip())


def test_rpm_orders_prereleases_like_semver():
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
               "1.0.0-rc.1", "1.0.0", "1.0.1", "2.0.0-rc.1", "2.0.0", "10.0.0"]
    for older, newer in zip(ordered, ordered[1:], strict=False):
        assert semver.Version.parse(older).compare(newer) < 0
        assert rpm_vercmp(rpm_version(older), rpm_version(newer)) < 0, (older, newer)


@pytest.mark.parametrize(("text", "expected"), [
    (GOOD.replace("version: 1.2.3", "verison: 1.2.3"),
     "demo.yaml:2: verison: unknown key (did you mean 'version'?)"),
    (GOOD.replace("    dest: /usr/bin/demo", "    dst: /usr/bin/demo"),
     "demo.yaml:9: files[1].dst: unknown key (did you mean 'dest'?)"),
    (GOOD.replace("src: run.sh", "src: missing.sh"),
     "demo.yaml:8: files[1].src: 'missing.sh' does not exist"),
    (GOOD.replace("src: run.sh", "src: ../outside.txt"),
     "demo.yaml:8: files[1].src:"),
    (GOOD.replace("dest: /usr/bin/demo", "dest: usr/bin/demo"),
     "demo.yaml:9: files[1].dest: 'usr/bin/demo' must be an absolute path"),
    (GOOD.replace("dest: /usr/bin/demo", "dest: /usr/../etc/demo"),
     "demo.yaml:9: files[1].dest: '/usr/../etc/demo' must not contain . or .. components"),
    (GOOD.replace("dest: /usr/bin/demo", "dest: /usr//bin/demo"),
     "demo.yaml:9: files[1].dest: '/usr//bin/demo' has an empty path component (//)"),
    (GOOD.replace("dest: /usr/bin/demo", "dest: /"),
     "demo.yaml:9: files[1].dest: '/' is the root directory"),
    (GOOD.replace("dest: /usr/bin/demo", 'dest: "/usr/bin/de\\tmo"'),
     "files[1].dest: '/usr/bin/de\\tmo' has a control character"),
    (GOOD + "rpm_os: linux\n",
     "demo.yaml:15: rpm_os: is an fpm option Kiln does not support"),
    (GOOD + "template-scripts: true\n",
     "demo.yaml:15: template-scripts: is an fpm option Kiln does not support"),
    (GOOD + "epoch: -1\n", "demo.yaml:15: epoch: -1 is not a whole number"),
    (GOOD + "exclude: [3]\n", "demo.yaml:15: exclude[0]: expected a glob"),
    (GOOD.replace("name: demo", "name: my app"), "demo.yaml:1: name: 'my app' is not a valid"),
    (GOOD.replace("name: demo", "name: -demo"), "demo.yaml:1: name: '-demo' is not a valid"),
    (GOOD.replace("version: 1.2.3", "version: 1.2"),
     "demo.yaml:2: version: '1.2' is not a semantic version"),
    (GOOD.replace("version: 1.2.3", "version: v1.2.3"),
     "demo.yaml:2: version: 'v1.2.3' is not a semantic version"),
    (GOOD + "depends:\n  - python3 >=\n", "demo.yaml:16: depends[0]: 'python3 >=' is not"),
    (GOOD + "depends:\n  - bash\n  - '>= 1.2'\n", "demo.yaml:17: depends[1]: '>= 1.2' is not"),
    (GOOD + "conflicts:\n  - a b c\n", "demo.yaml:16: conflicts[0]: 'a b c' is not"),
    (GOOD.replace("license: MIT\n", ""), "demo.yaml:1: license: missing (required)"),
    (GOOD.replace("summary: demo app", "summary: \"two\\nlines\""),
     "demo.yaml:3: summary: must be a single line"),
    (GOOD.replace('mode: "0640"', 'mode: "0999"'),
     "demo.yaml:13: config_files[0].mode: '0999' is not an octal mode"),
    (GOOD.replace("group: demo", "group: Bad Group"),
     "config_files[0].group: 'Bad Group' is not a valid user or group name"),
    (GOOD + "name: again\n", "demo.yaml:15: name: appears twice"),
    (GOOD + "arch: sparc\n", "demo.yaml:15: arch: 'sparc' is not one of noarch"),
    (GOOD + "scripts:\n  after_instal: x.sh\n",
     "demo.yaml:16: scripts.after_instal: unknown key (did you mean 'after_install'?)"),
    (GOOD + "scripts:\n  after_install: systemctl daemon-reload\n",
     "scripts.after_install: 'systemctl daemon-reload' is not a file"),
    (GOOD + "service:\n  exec: myapp --serve\n",
     "demo.yaml:16: service.exec: expected a command line starting with an absolute path"),
    (GOOD + "service:\n  exec: /usr/bin/demo\n  restart: sometimes\n",
     "demo.yaml:17: service.restart: 'sometimes' is not one of"),
    (GOOD + "directories:\n  - /opt/demo\n", "/opt/demo: is listed twice"),
    (GOOD + "files: [\n", "demo.yaml:16: not valid YAML"),
])
def test_bad_input_is_one_line_naming_file_line_and_key(project, text, expected):
    assert expected in error_of(project(text))


def test_symlinks_in_a_tree_are_links_whatever_they_point_to(project, tmp_path):
    """A link is packaged as a link: never followed (no doubled tree for a link to a directory,
    no content read from outside the folder), a dangling one too; a loop (which rpmbuild cannot
    classify) fails in one line instead of a RecursionError."""
    app = tmp_path / "app"
    outside = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    outside.write_text("secret\n")
    (app / "leak.txt").symlink_to(outside)
    (app / "python3.11").mkdir()
    (app / "python3.11" / "site.py").write_text("x = 1\n")
    (app / "python3").symlink_to("python3.11")
    (app / "python").symlink_to("/usr/bin/python3")
    (app / "gone").symlink_to("nowhere")
    manifest = load(project())
    links = {e.dest: e.target for e in manifest.entries if e.kind == "link"}
    assert links == {"/opt/demo/leak.txt": str(outside), "/opt/demo/python3": "python3.11",
                     "/opt/demo/python": "/usr/bin/python3", "/opt/demo/gone": "nowhere"}
    dests = [e.dest for e in manifest.entries]
    assert "/opt/demo/python3.11/site.py" in dests and "/opt/demo/python3/site.py" not in dests
    (app / "loop").symlink_to("loop")
    assert "files[0].src (app/loop): is a symlink loop (-> loop)" in error_of(project())


def test_modes_come_from_disk_and_empty_directories_are_owned(project, tmp_path):
    (tmp_path / "app" / "secrets.env").write_text("KEY=1\n")
    (tmp_path / "app" / "secrets.env").chmod(0o600)
    (tmp_path / "app" / "group.txt").write_text("g\n")
    (tmp_path / "app" / "group.txt").chmod(0o664)
    (tmp_path / "app" / "private").mkdir(mode=0o700)
    (tmp_path / "app" / "private").chmod(0o700)
    (tmp_path / "app" / "empty").mkdir()
    manifest = load(project())
    by_dest = {e.dest: e for e in manifest.entries}
    assert by_dest["/opt/demo/secrets.env"].mode == 0o600
    assert by_dest["/opt/demo/group.txt"].mode == 0o664
    assert (by_dest["/opt/demo/private"].kind, by_dest["/opt/demo/private"].mode) == ("dir", 0o700)
    assert by_dest["/opt/demo/empty"].kind == "dir"


def test_trailing_slashes_follow_fpm(project, tmp_path):
    text = GOOD.replace("    dest: /usr/bin/demo", "    dest: /usr/bin/")
    text = text.replace("  - src: app\n    dest: /opt/demo", "  - src: app\n    dest: /opt/demo/\n"
                        "  - src: app/\n    dest: /srv/demo/")
    dests = [e.dest for e in load(project(text)).entries]
    assert "/usr/bin/run.sh" in dests  # a file into the directory dest/
    assert "/opt/demo/app/main.py" in dests  # `app` into dest/, as fpm's app=/opt/demo/
    assert "/srv/demo/main.py" in dests  # `app/`: its contents


def test_any_file_name_is_kept(project, tmp_path):
    names = ["a b.txt", "café.js", "日本.txt", "%{name}", "[id].js", "*", "?", "{a,b}", "$x",
             "it's",
             'q"d', "back\\slash", "#h", "&", ";", "(p)", "!", "-dash"]
    for name in names:
        (tmp_path / "app" / name).write_text("x\n")
    dests = {e.dest for e in load(project()).entries}
    assert {f"/opt/demo/{name}" for name in names} <= dests


def test_exclude_globs(project, tmp_path):
    (tmp_path / "app" / "lib" / "util.pyc").write_text("x")
    (tmp_path / "app" / "tests").mkdir()
    (tmp_path / "app" / "tests" / "t.py").write_text("x")
    text = GOOD + "exclude:\n  - '*.pyc'\n"
    text = text.replace("    dest: /opt/demo\n", "    dest: /opt/demo\n    exclude: [tests]\n")
    dests = [e.dest for e in load(project(text)).entries]
    assert not [d for d in dests if d.endswith(".pyc") or "/tests" in d]
    assert "/opt/demo/lib/util.py" in dests


def test_epoch_and_replaces(project):
    manifest = load(project(GOOD + "epoch: 2\nreplaces:\n  - old-demo < 2.0\n"))
    assert (manifest.epoch, manifest.replaces) == (2, ["old-demo < 2.0"])


def test_arch_auto_takes_the_elf_machine(project, tmp_path):
    import shutil
    shutil.copy("/bin/true", tmp_path / "app" / "tool")
    assert load(project(GOOD + "arch: auto\n")).arch == "x86_64"
    (tmp_path / "app" / "tool").unlink()
    assert load(project(GOOD + "arch: auto\n")).arch == "noarch"


def test_symlinked_src_escaping_the_folder_is_refused(project, tmp_path):
    (tmp_path / "shared").symlink_to(tmp_path.parent)
    message = error_of(project(GOOD.replace("src: run.sh", "src: shared")))
    assert "demo.yaml:8: files[1].src:" in message and "outside the manifest's folder" in message


def test_bad_version_override_names_the_flag(project):
    assert "--version: '1.0' is not a semantic version" in error_of(project(), version="1.0")


def test_missing_manifest_names_the_file(tmp_path):
    assert "nope.yaml: cannot read the manifest" in error_of(tmp_path / "nope.yaml")


def test_scripts_accept_inline_text_and_paths(project, tmp_path):
    (tmp_path / "post.sh").write_text("echo installed\n")
    text = GOOD + "scripts:\n  after_install: post.sh\n  before_remove: |\n    echo bye\n    true\n"
    manifest = load(project(text))
    assert manifest.scripts == {"after_install": "echo installed\n",
                                "before_remove": "echo bye\ntrue\n"}


def test_a_yaml_block_is_inline_even_on_one_line(project):
    text = GOOD + "scripts:\n  after_install: |\n    systemctl daemon-reload\n"
    assert load(project(text)).scripts == {"after_install": "systemctl daemon-reload\n"}


def test_upgrade_scripts_are_accepted(project):
    text = GOOD + "scripts:\n  before_upgrade: |\n    echo up\n  after_upgrade: |\n    echo done\n"
    assert load(project(text)).scripts == {"before_upgrade": "echo up\n",
                                           "after_upgrade": "echo done\n"}
