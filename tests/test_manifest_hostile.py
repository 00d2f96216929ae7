"""A manifest is input, and an attacker's input is input too: values reach the RPM's root-run
scriptlets only shell-quoted, and a YAML bomb is one line, not a traceback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cloud.errors import KilnError
from packager.manifest import load
from packager.spec import scriptlets

MANIFEST = """\
name: quoted
version: 1.0.0
summary: s
license: MIT
user:
  name: svc
  home: {home}
"""


@pytest.mark.parametrize("home", ["/srv/$(touch {mark})", "/srv/`touch {mark}`",
                                  "/srv/a b;touch {mark}", "/srv/it's"])
def test_the_account_script_runs_with_the_home_as_one_argument(tmp_path, home):
    mark = tmp_path / "ran"
    home = home.format(mark=mark)
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST.format(home=json.dumps(home)))  # JSON strings are YAML strings
    script = scriptlets(load(path))["pre"]
    # The real script in a real shell, with the account tools replaced by functions that say
    # what they were given.
    harness = ('getent() { return 1; }\ngroupadd() { :; }\n'
               'useradd() { for a in "$@"; do printf "[%s]" "$a"; done; }\n'
               'command() { return 0; }\n' + script)
    result = subprocess.run(["sh", "-c", harness], capture_output=True, text=True, check=True)
    assert f"[-d][{home}]" in result.stdout
    assert not mark.exists()


def test_a_yaml_nested_past_reason_is_one_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text("a: " + "[" * 50000 + "]" * 50000 + "\n")
    with pytest.raises(KilnError) as raised:
        load(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: not valid YAML") and "\n" not in message


def test_the_hello_manifest_still_names_its_account(tmp_path):
    hello = Path(__file__).resolve().parent.parent / "manifests" / "hello-web.yaml"
    script = scriptlets(load(hello))["pre"]
    assert "useradd -r -g hello-web -d /var/lib/hello-web" in script
