"""The worked example of a team's own app (docs/examples/guestbook): its pipeline definition
loads beside Kiln's defaults, its commit stage runs its own unit tests before packaging and
publishing, and its acceptance and capacity stages run its own pytest suite (JUnit XML) and
locustfile against a candidate of an image holding the package the commit stage built. The
image is made from that package on a sandbox machine (rpm, without Chef): the bake is the image
stage's, tested on its own."""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from accounts import bootstrap
from cloud import apps
from cloud import settings as settings_module
from cloud import tags as kiln_tags
from cloud.target import connect
from orchestrator import pipeline
from packager.manifest import load
from tests.conftest import ROOT, deep_merge, project_config
from tests.deploy_helpers import FAST, admin_of, env_stack
from tests.image_helpers import available
from tests.test_sandbox_instances import BAKE_KEY_TAGS, base_image, ssh_group
from tests.test_sandbox_instances import connect as ssh_connect

EXAMPLE = ROOT / "docs" / "examples" / "guestbook"
STAGES = ["commit", "image", "acceptance", "capacity", "staging", "approval", "production"]


def example() -> dict:
    """The example's kiln settings (kiln.yaml), as a team would give them to Invoke."""
    return yaml.safe_load((EXAMPLE / "kiln.yaml").read_text())["kiln"]


def config() -> dict:
    """The example's settings for a test: its own stages, the load test shorter."""
    found = copy.deepcopy(example())
    for stage in found["apps"]["guestbook"]["pipeline"]["stages"]:
        if stage["action"] == "capacity":
            stage.update(duration="4s", thresholds={"max_error_percent": 0})
    return deep_merge(FAST, {"deploy": {"health_timeout": "90s"}, **found})


def test_the_example_pipeline_loads_with_its_own_files():
    settings = apps.for_app(settings_module.validate(
        deep_merge(project_config(), example()), ["example"]), "guestbook")
    found = pipeline.stages(settings)
    assert [s.name for s in found] == STAGES
    assert load(settings.manifest, "1.0.0", digest=False).name == "guestbook"
    by_name = {s.name: s for s in found}
    assert "docs/examples/guestbook/tests/unit" in by_name["commit"].get("commands")[0]
    assert "--junitxml \"$KILN_JUNIT_XML\"" in by_name["acceptance"].get("command")
    assert (ROOT / by_name["capacity"].get("locustfile")).is_file()
    assert set(by_name["capacity"].get("thresholds")) == {"min_rps", "max_p95_ms",
                                                          "max_error_percent"}


def guestbook_image(box, daws, package: Path) -> str:
    """An image holding the guestbook package (installed with rpm on a machine, the service
    enabled by its scriptlet), tagged as the promoted image of guestbook 1.0.0-1."""
    ec2 = admin_of(daws).client("ec2", daws.region)
    pem = ec2.create_key_pair(KeyName="guestbook-key",
                              TagSpecifications=BAKE_KEY_TAGS)["KeyMaterial"]
    instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1,
                                 KeyName="guestbook-key",
                                 SecurityGroupIds=[ssh_group(ec2)])["Instances"][0]
    with ssh_connect(box, instance, pem) as ssh:
        ssh.put(str(package), "/tmp/guestbook.rpm")
        ssh.run("sudo -n rpm -i /tmp/guestbook.rpm && sudo -n systemctl enable guestbook",
                hide=True)
    image = ec2.create_image(InstanceId=instance["InstanceId"], Name="guestbook-1.0.0-1")
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    ec2.delete_key_pair(KeyName="guestbook-key")
    available(ec2, image["ImageId"])
    labels = kiln_tags.kiln_tags("guestbook", "image", run_id="20250101T000000-abcdef",
                                 version="1.0.0", **{kiln_tags.RELEASE: "1"})
    ec2.create_tags(Resources=[image["ImageId"]], Tags=kiln_tags.to_list(labels))
    return image["ImageId"]


@pytest.fixture
def world(clean_sandbox, config_overrides):
    """A bootstrapped sandbox with the guestbook's acceptance environment in the deploy
    account."""
    settings = settings_module.validate(deep_merge(deep_merge(project_config(),
                                                              config_overrides), config()),
                                        ["test config"])
    admin = connect(settings, admin=True)
    bootstrap.run(admin.settings, admin, yes=True, parts=("prod", "build"))
    daws = connect(settings).account("prod")
    env_stack(daws, app="guestbook", cluster="guestbook-acceptance")
    return {"admin": admin, "aws": connect(settings), "daws": daws,
            "dist": Path(config_overrides["dist"])}


@pytest.mark.slow
def test_the_example_runs_its_own_tests_suite_and_locustfile(world, clean_sandbox, run_invoke):
    run = ("pipeline.run", "--app", "guestbook", "--version", "1.0.0", "--json")
    committed = run_invoke(*run, "--to", "commit", overrides=config(), check=True)
    assert "6 passed" in committed.stderr  # the unit tests, before the package
    guestbook_image(clean_sandbox, world["daws"],
                    world["dist"] / "guestbook-1.0.0-1.noarch.rpm")

    done = run_invoke(*run, "--from", "acceptance", "--to", "capacity", "--override",
                      overrides=config(), check=True)
    assert [s["outcome"] for s in json.loads(done.stdout)["stages"]] == ["passed", "passed"]
    assert "4 passed" in done.stderr  # the acceptance suite, against the candidate
    results = pipeline.results(world["aws"], "guestbook", "1.0.0-1")
    accepted = results["acceptance"]["evidence"]
    assert (accepted["tests"], accepted["failures"], accepted["errors"]) == (4, 0, 0)
    load_figures = results["capacity"]["evidence"]
    assert load_figures["failures"] == 0 and load_figures["breaches"] == [], load_figures
    report = urlsplit(load_figures["report"])
    stats = world["admin"].client("s3").get_object(
        Bucket=report.netloc, Key=report.path.lstrip("/") + "capacity_stats.csv")
    rows = csv.DictReader(io.StringIO(stats["Body"].read().decode()))
    assert {(r["Type"], r["Name"]) for r in rows} >= {("GET", "list"), ("POST", "sign")}

    plan = run_invoke(*run, "--dry-run", overrides=config(), check=True)
    assert [(s["stage"], (s["last"] or {}).get("outcome")) for s in
            json.loads(plan.stdout)["stages"]] == [
        ("commit", "passed"), ("image", None), ("acceptance", "passed"),
        ("capacity", "passed"), ("staging", None), ("approval", None), ("production", None)]
