"""Where the sandbox replaces moto's code (sandbox/aws/seams.py): declared, checked at start-up,
one owner each; a moto that changed underneath refuses to start in one line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cloud.errors import KilnError
from sandbox.aws import seams
from sandbox.control import Sandbox

ROOT = Path(__file__).resolve().parent.parent


class Moto:
    def method(self, a, b=1):
        return a + b


def test_a_replacement_keeps_the_original_and_records_its_owner(monkeypatch):
    monkeypatch.setattr(seams, "SEAMS", {})
    target = type("Target", (Moto,), {"method": Moto.method})
    kept = []
    seams.wrap(target, "method", lambda moto: kept.append(moto) or (lambda self, a, b=1: 0),
               signature="(self, a, b=1)", owner="sandbox.aws.here")
    assert kept == [Moto.method] and target().method(1) == 0
    assert list(seams.SEAMS.values())[0].owner == "sandbox.aws.here"
    seams.wrap(target, "method", lambda moto: kept.append(moto), signature="(self, a, b=1)",
               owner="sandbox.aws.here")  # again: nothing changes
    assert len(kept) == 1 and target().method(1) == 0


def test_a_changed_signature_or_a_missing_attribute_is_named(monkeypatch):
    monkeypatch.setattr(seams, "SEAMS", {})
    with pytest.raises(seams.SeamChanged, match=r"changed .*Moto\.method\(self, a, b=1\)"):
        seams.replace(Moto, "method", None, signature="(self, a)", owner="sandbox.aws.here")
    with pytest.raises(seams.SeamChanged, match=rf"moto {seams.moto_version()} has no "
                                                r".*Moto\.gone"):
        seams.replace(Moto, "gone", None, signature="(self)", owner="sandbox.aws.here")


def test_two_owners_of_one_attribute_are_refused(monkeypatch):
    monkeypatch.setattr(seams, "SEAMS", {})
    target = type("Target", (Moto,), {"method": Moto.method})
    seams.replace(target, "method", Moto.method, signature="(self, a, b=1)", owner="first")
    with pytest.raises(seams.SeamChanged, match="replaced by both first and second"):
        seams.replace(target, "method", Moto.method, signature="(self, a, b=1)", owner="second")


def test_an_added_attribute_is_refused_once_moto_has_its_own(monkeypatch):
    monkeypatch.setattr(seams, "SEAMS", {})
    target = type("Target", (Moto,), {})
    seams.add(target, "extra", 1, owner="sandbox.aws.here")
    seams.add(target, "extra", 2, owner="sandbox.aws.here")  # again: nothing changes
    assert target.extra == 1 and seams.SEAMS[seams.dotted(target, "extra")].signature is None
    with pytest.raises(seams.SeamChanged, match=rf"moto {seams.moto_version()} now has "
                                                r".*Moto\.method, which sandbox.aws.here adds"):
        seams.add(Moto, "method", None, owner="sandbox.aws.here")
    with pytest.raises(seams.SeamChanged, match="replaced by both sandbox.aws.here and other"):
        seams.add(target, "extra", 3, owner="other")


CHANGED_SIGNATURE = """
from moto.ec2.models.amis import AmiBackend

def create_image(self, instance_id, name, description, tag_specifications, extra):
    raise AssertionError("never called")

AmiBackend.create_image = create_image
"""
# moto 5.2.1 had no request handler of its own; the sandbox's server uses 5.2.6's.
MISSING_PART = """
import moto.moto_server.werkzeug_app as app
del app.MotoRequestHandler
"""


@pytest.mark.parametrize(("change", "named"), [
    (CHANGED_SIGNATURE, "AmiBackend.create_image"),
    (MISSING_PART, "moto.moto_server.werkzeug_app.MotoRequestHandler, which sandbox.server")])
def test_a_server_on_a_changed_moto_refuses_to_start_in_one_line(tmp_path, change, named):
    """What a moto upgrade that moved a seam looks like to the user: sandbox.up fails, naming the
    attribute and moto's version."""
    import os

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(change))
    box = Sandbox(tmp_path / "state")
    saved = dict(os.environ)
    os.environ["PYTHONPATH"] = f"{site}:{ROOT}"
    try:
        with pytest.raises(KilnError) as raised:
            box.up()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        box.down()
    message = str(raised.value)
    assert named in message and f"moto {seams.moto_version()}" in message
    assert "\n" not in message


PROBE = """
import importlib, inspect, json, sys, tempfile
from pathlib import Path

def snapshot():
    found = {}
    for name, module in list(sys.modules.items()):
        if not name.startswith("moto") or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if inspect.isclass(value) and value.__module__ == name:
                for key, member in list(vars(value).items()):
                    found[f"{name}.{value.__qualname__}.{key}"] = id(member)
            elif inspect.isfunction(value) and getattr(value, "__module__", "") == name:
                found[f"{name}.{attr}"] = id(value)
    return found

from sandbox.aws import PATCHES, seams
from sandbox.aws.iam import identities
state = Path(tempfile.mkdtemp())
identities.write_credentials(state)
for name in PATCHES:  # moto's modules, loaded as the patches load them, before any applies
    importlib.import_module(f"sandbox.aws.{name}")
import moto.backends, moto.server  # noqa
before = snapshot()
from sandbox.aws import apply_all
apply_all(state)
after = snapshot()
changed = sorted(k for k, v in after.items() if k in before and before[k] != v)
print(json.dumps({"changed": changed, "declared": sorted(seams.SEAMS)}))
"""


def test_every_replaced_moto_attribute_is_a_declared_seam(tmp_path):
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    undeclared = [name for name in found["changed"] if name not in found["declared"]]
    assert len(found["declared"]) > 20
    assert not undeclared, "replaced without sandbox.aws.seams.replace:\n" + "\n".join(undeclared)
