"""Two bakes of the same version at once make one image: the second waits for the first's lease
on bake/<app>/<version>, then reuses its image; the release record and the image agree."""

from __future__ import annotations

import json
import subprocess
import threading

import pytest
import yaml

from tests.bake_helpers import (
    PROBE,
    PROBE_SETTINGS,
    bootstrapped_sandbox,
    image_count,
    leftovers,
    proxied,
    write_probe_manifest,
)
from tests.conftest import INVOKE, ROOT, deep_merge
from tests.faults import FaultProxy

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bake-concurrency")]


@pytest.fixture(scope="module")
def bake_sandbox(sandbox_box, tmp_path_factory):
    return bootstrapped_sandbox(sandbox_box, tmp_path_factory)


def start_bake(config: dict, tmp_path, name: str, manifest: str, env: dict):
    runtime = tmp_path / f"{name}.yaml"
    runtime.write_text(yaml.safe_dump({"kiln": config}))
    return subprocess.Popen([INVOKE, "-f", str(runtime), "bake", "--version", "3.0.0", "--json",
                             "--share", "", "--manifest", manifest], cwd=ROOT, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class Lines:
    def __init__(self, stream, text: str):
        self.lines, self.text, self.seen = [], text, threading.Event()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            if self.text in line:
                self.seen.set()


def test_a_second_bake_of_the_version_waits_and_reuses_the_first_image(
        bake_sandbox, config_overrides, tmp_path):
    import os

    manifest = write_probe_manifest(tmp_path)
    before = image_count()
    base = deep_merge(config_overrides, PROBE_SETTINGS)
    with FaultProxy(bake_sandbox.endpoint) as proxy:
        overrides, env = proxied(bake_sandbox, proxy.url)
        hold = proxy.hold("CreateImage")
        first = start_bake(deep_merge(base, overrides), tmp_path, "first", manifest,
                           {**os.environ, **env})
        second = None
        try:
            assert hold.arrived.wait(300), first.stderr.read()
            second = start_bake(deep_merge(base, overrides), tmp_path, "second", manifest,
                                {**os.environ, **env})
            waiting = Lines(second.stderr, "waiting up to")
            assert waiting.seen.wait(120), "\n".join(waiting.lines)
            assert "bake: step key-pair" not in waiting.lines
            hold.release()
            first_out, first_err = first.communicate(timeout=300)
            second_out = second.communicate(timeout=300)[0]
        finally:
            for process in (first, second):
                if process and process.poll() is None:
                    process.kill()
                    process.wait()
    assert first.returncode == 0, first_err
    assert second.returncode == 0, "\n".join(waiting.lines)
    one, two = json.loads(first_out), json.loads(second_out)
    log = "\n".join(waiting.lines)
    assert not one["reused"] and two["reused"], log
    assert two["image_id"] == one["image_id"]
    assert image_count() == before + 1
    assert leftovers(app=PROBE) == {}
