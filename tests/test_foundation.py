"""Foundation images: a named base (a base image plus a run list of its own, no app) baked with
real chef-solo, tagged and shared as app images are, published in its SSM parameter; an app that
names it bakes on its newest image; status tells the apps behind it, and one command rebakes them.

One foundation bake and one app bake on it are shared by the module; a second foundation version
and the rebake it calls for come after, in order.
"""

from __future__ import annotations

import boto3
import pytest

from cloud import apps, foundations
from cloud import settings as settings_module
from cloud import tags as kiln_tags
from cloud.errors import ConfigError, KilnError
from cloud.target import connect
from provisioner import bake, behind
from tests.bake_helpers import bootstrapped_sandbox
from tests.conftest import ROOT, deep_merge, project_config

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("foundation")]

EXAMPLE = ROOT / "docs" / "examples" / "team-chef"
RUNTIME_17 = "/opt/runtime/bin/runtime | grep -Fx 'runtime 17 heap 512m'"
JDK = {"bake": {"run_list": ["role[runtime]"], "cookbook_paths": [str(EXAMPLE / "cookbooks")],
                "roles_dir": str(EXAMPLE / "roles"), "smoke_commands": [RUNTIME_17]}}
# hello-web on the foundation: its run list is Kiln's recipe alone, yet the runtime is there.
APP = {"bake": {"foundation": "jdk", "smoke_retries": 2, "smoke_retry_delay": 1,
                "smoke_commands": [*project_config()["bake"]["smoke_commands"],
                                   "/opt/runtime/bin/runtime | grep -q '^runtime '"]}}


def build(box, folder, **overrides) -> settings_module.Settings:
    base = {"sandbox": {"state_dir": str(box.state_dir)}, "dist": str(folder / "dist"),
            "foundations": {"jdk": JDK}, "apps": {"hello-web": APP}}
    raw = deep_merge(deep_merge(project_config(), base), overrides)
    return settings_module.validate(raw, ["test config"])


@pytest.fixture(scope="module")
def baked(sandbox_box, tmp_path_factory):
    """Foundation jdk 1.0.0, then hello-web 1.0.0 on it (both real bakes)."""
    box = bootstrapped_sandbox(sandbox_box, tmp_path_factory)
    folder = tmp_path_factory.mktemp("foundation")
    aws = connect(build(box, folder))  # the sandbox's overlay: sshd, repo key…
    jdk = foundations.for_foundation(aws.settings, "jdk")
    foundation = bake.run(aws.with_settings(jdk), jdk, "1.0.0", foundation="jdk")
    app = apps.for_app(aws.settings, "hello-web")
    record = bake.run(aws.with_settings(app), app, "1.0.0")
    return {"box": box, "folder": folder, "settings": aws.settings, "aws": aws,
            "foundation": foundation, "app": record}


def tags_of(image_id: str, client=None) -> dict[str, str]:
    ec2 = client or boto3.client("ec2")
    return kiln_tags.from_list(ec2.describe_images(ImageIds=[image_id])["Images"][0]["Tags"])


def test_a_foundation_is_baked_tagged_shared_and_published_in_its_parameter(baked):
    record, settings = baked["foundation"], baked["settings"]
    image = record["image_id"]
    found = tags_of(image)
    assert (found[foundations.FOUNDATION], found[kiln_tags.VERSION], found[kiln_tags.APP]) == (
        "jdk", "1.0.0", "foundation/jdk")
    assert found[bake.INPUTS_DIGEST] == record["inputs_digest"]
    assert kiln_tags.RELEASE not in found and "kiln:rpm-nevra" not in found
    ec2 = boto3.client("ec2")
    snapshot = ec2.describe_images(ImageIds=[image])["Images"][0]["BlockDeviceMappings"][0]
    assert tags_of(image)[kiln_tags.ROLE] == "image" and snapshot["Ebs"]["SnapshotId"]
    launch = ec2.describe_image_attribute(ImageId=image, Attribute="launchPermission")
    prod = settings.accounts.prod.id
    assert [p["UserId"] for p in launch["LaunchPermissions"]] == [prod]

    ssm = boto3.client("ssm")
    name = foundations.parameter_name(settings, "jdk")
    assert name == "/kiln/foundation/jdk/ami"
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == image
    parameter_tags = kiln_tags.from_list(ssm.list_tags_for_resource(
        ResourceType="Parameter", ResourceId=name)["TagList"])
    assert (parameter_tags[kiln_tags.VERSION], parameter_tags[foundations.FOUNDATION]) == (
        "1.0.0", "jdk")
    assert record["foundation"]["published"] == {settings.aws.region: image}

    # The same inputs again: planned as a reuse, then reused; nothing launched.
    jdk = foundations.for_foundation(settings, "jdk")
    plan = bake.run(baked["aws"].with_settings(jdk), jdk, "1.0.0", foundation="jdk",
                    dry_run=True)
    assert (plan["reuse"], plan["chef"]["run_list"]) == (image, ["role[runtime]"])
    again = bake.run(baked["aws"].with_settings(jdk), jdk, "1.0.0", foundation="jdk")
    assert (again["reused"], again["image_id"]) == (True, image)


def test_an_app_on_a_foundation_bakes_on_its_image_and_records_it(baked, capsys):
    record, foundation = baked["app"], baked["foundation"]
    assert record["base_ami"]["id"] == foundation["image_id"]
    assert record["on_foundation"] == {"name": "jdk", "image_id": foundation["image_id"],
                                       "version": "1.0.0"}
    found = tags_of(record["image_id"])
    assert (found[foundations.FOUNDATION], found[foundations.FOUNDATION_AMI],
            found[foundations.FOUNDATION_VERSION]) == ("jdk", foundation["image_id"], "1.0.0")
    assert found["kiln:base-ami-id"] == foundation["image_id"]
    entries = foundations.behind(baked["aws"])
    assert [(e["app"], e["behind"]) for e in entries] == [("hello-web", False)]


def test_the_foundation_settings_are_checked_at_load(baked):
    box, folder = baked["box"], baked["folder"]
    with pytest.raises(ConfigError, match=r"kiln.foundations.jdk.bake.run_list: "
                                          r"recipe\[kiln_app\] installs an app"):
        build(box, folder, foundations={"jdk": {"bake": {"run_list": ["recipe[kiln_app]"]}}})
    with pytest.raises(ConfigError, match=r"kiln.apps.hello-web.bake.foundation: 'jdk8' is not "
                                          r"a foundation in kiln.foundations \(known: jdk\)"):
        build(box, folder, apps={"hello-web": {"bake": {"foundation": "jdk8"}}})
    with pytest.raises(ConfigError, match=r"kiln.foundations.jdk.bake.instance_typ: unknown"):
        build(box, folder, foundations={"jdk": {"bake": {"instance_typ": "t3.large"}}})
    with pytest.raises(KilnError, match=r"--foundation go: not in kiln.foundations"):
        foundations.for_foundation(baked["settings"], "go")


def test_bake_flags_that_do_not_go_together_are_refused_in_one_line(baked, run_invoke):
    overrides = {"foundations": {"jdk": JDK}, "apps": {"hello-web": APP}}
    for args, line in (
            (("--foundation", "jdk", "--app", "hello-web", "--version", "1.0.0"),
             "kiln: bake: give one of --app, --foundation"),
            (("--behind-foundation", "jdk", "--version", "1.0.0"),
             "kiln: bake --behind-foundation: each app is rebaked at the release of its newest "
             "image; --version, --manifest and --iteration do not apply"),
            (("--foundation", "jdk", "--version", "1.0.0", "--iteration", "2"),
             "kiln: bake --foundation: a foundation has no package; --manifest and --iteration "
             "do not apply")):
        result = run_invoke("bake", *args, overrides=overrides)
        assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (4, line)


@pytest.fixture(scope="module")
def newer(baked):
    """Foundation jdk 1.1.0 (another attribute, so another image)."""
    aws = connect(build(baked["box"], baked["folder"], foundations={"jdk": {"bake": {
        "attributes": {"runtime": {"version": "21"}},
        "smoke_commands": ["/opt/runtime/bin/runtime | grep -F 'runtime 21'"]}}}))
    jdk = foundations.for_foundation(aws.settings, "jdk")
    record = bake.run(aws.with_settings(jdk), jdk, "1.1.0", foundation="jdk")
    return {**baked, "newer": record, "settings": aws.settings, "aws": aws}


def test_apps_behind_their_foundation_are_shown_and_rebaked_by_one_command(newer, capsys,
                                                                          run_invoke):
    aws, old_app = newer["aws"], newer["app"]
    assert newer["newer"]["image_id"] != newer["foundation"]["image_id"]
    entries = foundations.behind(aws)
    assert [(e["app"], e["behind"], e["image_id"], e["on"]["version"], e["newest"]["version"])
            for e in entries] == [("hello-web", True, old_app["image_id"], "1.0.0", "1.1.0")]
    status = run_invoke("status", overrides={"foundations": {"jdk": JDK},
                                             "apps": {"hello-web": APP}}, check=True)
    assert (f"hello-web: image {old_app['image_id']} (1.0.0-1) is BEHIND foundation jdk 1.1.0 "
            f"({newer['newer']['image_id']})") in status.stdout

    images_before = len(boto3.client("ec2").describe_images(Owners=["self"])["Images"])
    plan = behind.run(aws, "jdk", dry_run=True)
    assert plan["rebake"] == [{"app": "hello-web", "version": "1.0.0", "release": "1"}]
    assert len(boto3.client("ec2").describe_images(Owners=["self"])["Images"]) == images_before
    assert "hello-web: would rebake 1.0.0-1 on " + newer["newer"]["image_id"] in \
        capsys.readouterr().err

    done = behind.run(aws, "jdk")
    [rebaked] = done["baked"]
    assert (rebaked["app"], rebaked["version"], rebaked["release"]) == ("hello-web", "1.0.0", "1")
    found = tags_of(rebaked["image_id"])
    assert (found[foundations.FOUNDATION_AMI], found[foundations.FOUNDATION_VERSION]) == (
        newer["newer"]["image_id"], "1.1.0")
    assert [e["behind"] for e in foundations.behind(aws)] == [False]
    # A late bake of an older foundation version does not move its parameter back.
    assert foundations.publish(aws, "jdk", "1.0.0", {aws.region: newer["foundation"][
        "image_id"]}) == {}
    assert foundations.current(aws, "jdk")["ImageId"] == newer["newer"]["image_id"]
