"""The team's part of the chef run (kiln.bake run_list, cookbook_paths, attributes, roles_dir,
environments_dir, environment): checked at load, laid out for chef-solo, and in the inputs digest
of the apps that use it only. Real chef-solo runs of the worked example are in
test_cookbook.py."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from cloud import apps
from cloud.errors import ConfigError, KilnError
from provisioner import bake as baking
from provisioner import chef
from provisioner.provision import CHEF_DIR
from tests.test_chef import evaluate_solo_rb, sample_node

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "team-chef"


@pytest.fixture
def team(tmp_path) -> Path:
    """A copy of the worked example, free to change."""
    copy = tmp_path / "team-chef"
    shutil.copytree(EXAMPLE, copy)
    return copy


def team_settings(folder: Path) -> dict:
    return {"run_list": ["role[runtime]", "recipe[kiln_app]", "recipe[runtime::after_app]"],
            "cookbook_paths": [str(folder / "cookbooks")], "roles_dir": str(folder / "roles"),
            "environments_dir": str(folder / "environments"), "environment": "production",
            "attributes": {"runtime": {"version": "21"}}}


@pytest.mark.parametrize("run_list, message", [
    (["recipe[runtime]"], r"must hold recipe\[kiln_app\] exactly once"),
    (["recipe[kiln_app]", "recipe[kiln_app]"], r"must hold recipe\[kiln_app\] exactly once"),
    (["runtime", "recipe[kiln_app]"], r"'runtime' is not recipe\[COOKBOOK\]"),
    (["role[jdk]", "recipe[kiln_app]"], r"role\[jdk\] needs kiln.bake.roles_dir"),
])
def test_a_run_list_holds_kilns_recipe_once_and_only_recipes_and_roles(kiln_settings, run_list,
                                                                      message):
    with pytest.raises(ConfigError, match=rf"kiln.bake.run_list: {message}"):
        kiln_settings(bake={"run_list": run_list})


def test_the_team_attributes_leave_kilns_own_alone(kiln_settings):
    with pytest.raises(ConfigError, match=r"kiln.bake.attributes.kiln_app: Kiln writes this one"):
        kiln_settings(bake={"attributes": {"kiln_app": {"service": "other"}}})
    with pytest.raises(ConfigError, match=r"kiln.bake.environment: 'production' needs "
                                          r"kiln.bake.environments_dir"):
        kiln_settings(bake={"environment": "production"})


def test_an_apps_bake_settings_are_checked_under_its_name(kiln_settings):
    settings = kiln_settings(apps={"worker": {"bake": {"run_list": ["recipe[runtime]"]}}})
    with pytest.raises(ConfigError, match=r"kiln.apps.worker over the defaults: "
                                          r"kiln.bake.run_list: must hold recipe\[kiln_app\]"):
        apps.for_app(settings, "worker")


def test_node_json_carries_the_run_list_and_the_team_attributes():
    node = sample_node(run_list=["role[runtime]", "recipe[kiln_app]"],
                       attributes={"runtime": {"version": "21"}})
    assert node["run_list"] == ["role[runtime]", "recipe[kiln_app]"]
    assert node["runtime"] == {"version": "21"} and node["kiln_app"]["name"] == "hello-web"


def test_solo_rb_lists_the_team_folders_after_kilns(team, kiln_settings, tmp_path):
    layout = chef.Layout.of(kiln_settings(bake=team_settings(team)).bake, CHEF_DIR)
    values = evaluate_solo_rb(chef.solo_rb("/home/ec2-user/kiln-bake", layout=layout), tmp_path)
    assert values["cookbook_path"] == ["/home/ec2-user/kiln-bake/cookbooks",
                                       "/home/ec2-user/kiln-bake/team-cookbooks/1"]
    assert values["role_path"] == "/home/ec2-user/kiln-bake/roles"
    assert values["environment_path"] == "/home/ec2-user/kiln-bake/environments"
    assert values["environment"] == "production"
    with tarfile.open(fileobj=io.BytesIO(layout.archive())) as tar:
        names = tar.getnames()
    assert {"cookbooks/kiln_app/metadata.rb", "team-cookbooks/1/runtime/metadata.rb",
            "roles/runtime.json", "environments/production.json"} <= set(names)


def test_a_cookbook_in_two_folders_or_a_cookbook_named_as_a_folder_is_refused(team, tmp_path):
    shutil.copytree(team / "cookbooks" / "runtime", tmp_path / "more" / "kiln_app")
    with pytest.raises(KilnError, match=r"cookbook kiln_app is in .*/more and in Kiln's "
                                        r"chef/cookbooks; rename one"):
        chef.Layout(CHEF_DIR, (tmp_path / "more",)).check()
    with pytest.raises(KilnError, match=r"runtime is a cookbook; name the folder that holds it"):
        chef.Layout(CHEF_DIR, (team / "cookbooks" / "runtime",)).check()
    with pytest.raises(KilnError, match=r"kiln.bake.cookbook_paths: .*/nope is not a folder"):
        chef.Layout(CHEF_DIR, (tmp_path / "nope",)).check()
    with pytest.raises(KilnError, match=r"kiln.bake.environment: no staging.json or staging.rb"):
        chef.Layout(CHEF_DIR, environments_dir=team / "environments", environment="staging").check()


def digest_of(settings) -> str:
    """The inputs digest a bake of these settings computes, for a fixed base image and RPM."""
    job = baking.Bake(aws=None, settings=settings, version="1.0.0", manifest=settings.manifest,
                      regions=[], share=[])
    job.base, job.package = {"ImageId": "ami-0123456789abcdef0"}, {"sha256": "ab" * 32}
    job.cookbook_digest = baking._chef_layout(settings).digest()
    return baking.inputs_digest(job)


def test_each_team_part_is_in_the_inputs_digest_of_the_apps_that_use_it_only(team, kiln_settings):
    settings = kiln_settings(apps={"billing": {"bake": team_settings(team)}, "worker": {}})
    plain = kiln_settings()
    worker, billing = (apps.for_app(settings, name) for name in ("worker", "billing"))
    before = {"worker": digest_of(worker), "billing": digest_of(billing)}
    # An app without a team part has the digest it had before these settings existed.
    assert before["worker"] == digest_of(plain) != before["billing"]

    recipe = team / "cookbooks" / "runtime" / "recipes" / "default.rb"
    recipe.write_text(recipe.read_text() + "# changed\n")
    assert digest_of(billing) != before["billing"]
    assert digest_of(worker) == before["worker"]
    before["billing"] = digest_of(billing)

    for change in ({"attributes": {"runtime": {"version": "17"}}},
                   {"run_list": ["role[runtime]", "recipe[kiln_app]"]},
                   {"environment": None}):
        changed = kiln_settings(apps={"billing": {"bake": {**team_settings(team), **change}}})
        assert digest_of(apps.for_app(changed, "billing")) != before["billing"], change
    role = team / "roles" / "runtime.json"
    role.write_text(role.read_text().replace("512m", "768m"))
    assert digest_of(billing) != before["billing"] and digest_of(worker) == before["worker"]
