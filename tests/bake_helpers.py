"""What bake tests share: a bootstrapped sandbox, and counting what a bake left behind."""

from __future__ import annotations

import subprocess

import boto3
import yaml

from cloud import tags as kiln_tags
from tests.conftest import INVOKE, ROOT, deep_merge

# The temporary resources of a bake, by the service call that lists them.
TEMPORARY_ROLES = ("bake-instance", "bake-key", "bake-sg", "bake-volume")


def bootstrap(run_invoke) -> None:
    """The support stacks a bake reads (build, prod, the app environment): `invoke bootstrap`."""
    run_invoke("bootstrap", "--yes", check=True)


def leftovers(run_id: str | None = None, app: str = "hello-web") -> dict[str, list[str]]:
    """Temporary bake resources still there, counted with each service's own describe call."""
    ec2 = boto3.client("ec2")
    wanted = {kiln_tags.APP: app}
    if run_id:
        wanted[kiln_tags.RUN_ID] = run_id
    found = {}
    for role, kind in (("bake-instance", "instances"), ("bake-key", "key_pairs"),
                       ("bake-sg", "security_groups"), ("bake-volume", "volumes")):
        filters = kiln_tags.filters({**wanted, kiln_tags.ROLE: role})
        if kind == "instances":
            found[role] = [i["InstanceId"] for r in ec2.describe_instances(Filters=filters)[
                "Reservations"] for i in r["Instances"] if i["State"]["Name"] != "terminated"]
        elif kind == "key_pairs":
            found[role] = [k["KeyPairId"] for k in ec2.describe_key_pairs(Filters=filters)[
                "KeyPairs"]]
        elif kind == "security_groups":
            found[role] = [g["GroupId"] for g in ec2.describe_security_groups(Filters=filters)[
                "SecurityGroups"]]
        else:
            found[role] = [v["VolumeId"] for v in ec2.describe_volumes(Filters=filters)[
                "Volumes"]]
    return {role: ids for role, ids in found.items() if ids}


def images(app: str = "hello-web") -> list[dict]:
    ec2 = boto3.client("ec2")
    return ec2.describe_images(Owners=["self"], Filters=kiln_tags.filters(
        {kiln_tags.APP: app, kiln_tags.ROLE: "image"}))["Images"]


PROBE = "bake-probe"


def write_probe_manifest(folder) -> str:
    """A one-file package with no dependencies and no service."""
    app = folder / "probe"
    app.mkdir(parents=True, exist_ok=True)
    (app / "probe.txt").write_text("baked by kiln\n")
    manifest = folder / f"{PROBE}.yaml"
    manifest.write_text(f"""\
name: {PROBE}
version: 1.0.0
iteration: 1
arch: noarch
summary: A file to bake into an image
description: Installs one file; the bake tests' package.
license: MIT
files:
  - src: probe/probe.txt
    dest: /opt/{PROBE}/probe.txt
""")
    return str(manifest)


def image_count(app: str = PROBE) -> int:
    """Images of `app` in any state, with or without the image role (a half-made one too)."""
    ec2 = boto3.client("ec2")
    return len(ec2.describe_images(Owners=["self"], Filters=kiln_tags.filters(
        {kiln_tags.APP: app}))["Images"])


def bootstrapped_sandbox(sandbox_box, tmp_path_factory):
    """Reset the sandbox and bootstrap it, for one test module (bootstrap takes a while)."""
    sandbox_box.reset()
    folder = tmp_path_factory.mktemp("bake")
    runtime = folder / "bootstrap.yaml"
    runtime.write_text(yaml.safe_dump({"kiln": {
        "sandbox": {"state_dir": str(sandbox_box.state_dir)}, "dist": str(folder / "dist")}}))
    done = subprocess.run([INVOKE, "-f", str(runtime), "bootstrap", "--yes"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return sandbox_box


def proxied(box, proxy_url: str) -> tuple[dict, dict]:
    """(config overrides, environment) for a task that reaches the sandbox through a proxy:
    the sandbox target with kiln.aws.endpoint_url naming the proxy (a `target: aws` run refuses
    the sandbox's accounts, whatever its endpoint). The environment points boto3 at the proxy
    too, for a test's own calls.
    """
    from sandbox.machines import ssh_access

    # The bake's repo URL names the proxy: instances reach it as they reach the sandbox's S3.
    ssh_access.reach_through(box.state_dir, int(proxy_url.rsplit(":", 1)[1].split("/")[0]))
    overrides = {"target": "sandbox", "sandbox": {"state_dir": str(box.state_dir)},
                 "aws": {"endpoint_url": proxy_url}}
    return overrides, {**box.env(), "AWS_ENDPOINT_URL": proxy_url}


# The probe package has no service: no health check to run on the instance.
PROBE_SETTINGS = {"bake": {"smoke_commands": []}}


def bake(run_invoke, manifest: str, *extra: str, version: str = "1.0.0",
         overrides: dict | None = None, env: dict | None = None):
    """`invoke bake --version V --json --manifest M …` of the probe package."""
    return run_invoke("bake", "--version", version, "--json", "--manifest", manifest, *extra,
                      env=env, overrides=deep_merge(PROBE_SETTINGS, overrides or {}))
