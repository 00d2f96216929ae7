"""The commit and image stages for real: the app's commands, package and publish, then a bake
(chef-solo on a sandbox instance) and the promotion into the deploy account; the stages'
outcomes end up as tags on the baked image."""

from __future__ import annotations

import json

import boto3
import pytest

from cloud import tags as kiln_tags
from tests.bake_helpers import bootstrap

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pipeline-image")]

CONFIG = {"apps": {"hello-web": {"pipeline": {"stages": [
    {"name": "commit", "action": "commit", "commands": ["test -d chef"]},
    {"name": "image", "action": "image"}]}}}}


def test_commit_then_image_bakes_promotes_and_tags_the_image(clean_sandbox, run_invoke):
    bootstrap(run_invoke)
    done = run_invoke("pipeline.run", "--version", "2.0.0", "--json", overrides=CONFIG)
    assert done.returncode == 0, done.stderr
    assert [s["stage"] for s in json.loads(done.stdout)["stages"]] == ["commit", "image"]
    baked = boto3.client("ec2").describe_images(Owners=["self"], Filters=kiln_tags.filters(
        {kiln_tags.APP: "hello-web", kiln_tags.VERSION: "2.0.0"}))["Images"]
    assert len(baked) == 1
    found = kiln_tags.from_list(baked[0]["Tags"])
    assert found["kiln:stage:commit"].startswith("passed ")
    assert found["kiln:stage:image"].startswith("passed ")
    events = json.loads(run_invoke("history", "--json", check=True).stdout)["events"]
    image = next(e for e in events if e["event"] == "stage image")
    assert image["evidence"]["image"] == baked[0]["ImageId"]
    assert image["evidence"]["promoted"]["to"] == "prod"
    promoted = image["evidence"]["promoted"]["promotions"]
    assert promoted, image
