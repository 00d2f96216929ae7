"""A release is version-release: records, images, server groups and --version all say which."""

import base64
import json

import pytest

from cloud import tags as kiln_tags
from cloud.errors import KilnError
from orchestrator import operations
from provisioner import promote, record
from tests.conftest import deep_merge
from tests.deploy_helpers import FAST, make_image
from tests.image_helpers import make_image as bake_like_image

QUICK = deep_merge(FAST, {"deploy": {"steps": "100"}})


@pytest.fixture
def deploy_overrides():
    return QUICK


def test_each_iteration_of_a_version_has_its_own_record(kiln_settings):
    settings = kiln_settings()
    first = record.write(settings, "hello-web", "2.4.0", {"image_id": "ami-1"}, "1")
    second = record.write(settings, "hello-web", "2.4.0", {"image_id": "ami-2"}, "2")
    assert (first.name, second.name) == ("release-hello-web-2.4.0-1.json",
                                         "release-hello-web-2.4.0-2.json")
    assert json.loads(first.read_text())["image_id"] == "ami-1"
    assert record.load(settings, "hello-web", "2.4.0", "2")["image_id"] == "ami-2"


def test_version_release_readings():
    assert kiln_tags.release_readings("2.4.0-2") == [("2.4.0", "2"), ("2.4.0-2", None)]
    assert kiln_tags.release_readings("2.0.0-rc.1") == [("2.0.0-rc.1", None)]
    assert kiln_tags.release_readings("2.0.0-rc.1-3") == [("2.0.0-rc.1", "3"),
                                                          ("2.0.0-rc.1-3", None)]


def test_deploy_names_a_release_and_status_shows_it(kaws, daws, outputs):
    first = make_image(daws, "2.4.0", release="1")
    second = make_image(daws, "2.4.0", release="2")
    planned = operations.deploy(kaws, version="2.4.0-1", dry_run=True)
    assert planned["plan"]["steps"][0]["image"]["id"] == first
    assert planned["plan"]["summary"] == "2.4.0-1, first server group"
    assert operations.deploy(kaws, version="2.4.0", dry_run=True)["plan"]["steps"][0][
        "image"]["id"] == second
    operations.deploy(kaws, version="2.4.0-2")
    group = operations.status(kaws)["server_groups"][0]
    assert (group["ami"], group["version"], group["release"], group["release_id"]) == (
        second, "2.4.0", "2", "2.4.0-2")
    template = daws.client("ec2").describe_launch_template_versions(
        LaunchTemplateName="hello-web-v001")["LaunchTemplateVersions"][0]
    script = base64.b64decode(template["LaunchTemplateData"]["UserData"]).decode()
    assert "KILN_VERSION=2.4.0\n" in script and "KILN_RELEASE=2\n" in script
    assert "hello-web-v001  2.4.0-2" in "\n".join(
        operations.status_lines(operations.status(kaws)))
    with pytest.raises(KilnError, match="no available image of hello-web version 2.4.0-3"):
        operations.deploy(kaws, version="2.4.0-3", dry_run=True)


def test_promote_finds_the_release_a_version_names(aws, clean_sandbox):
    ec2 = aws.client("ec2")
    one = bake_like_image(ec2, None, version="1.4.2", **{kiln_tags.RELEASE: "1"})
    two = bake_like_image(ec2, None, version="1.4.2", **{kiln_tags.RELEASE: "2"})
    assert promote.find_release(aws, "hello-web", "1.4.2-1", aws.region)["ImageId"] == one
    assert promote.find_release(aws, "hello-web", "1.4.2", aws.region)["ImageId"] == two
    with pytest.raises(KilnError, match="no image of hello-web 1.4.2-7"):
        promote.find_release(aws, "hello-web", "1.4.2-7", aws.region)
