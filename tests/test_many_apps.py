"""Many apps from one checkout, and clusters of one app in several stacks, through bootstrap."""

import pytest

from accounts import bootstrap as kiln_bootstrap
from cloud import apps, stacks
from cloud.errors import KilnError
from cloud.target import connect
from orchestrator import operations
from orchestrator import stack as env_stacks
from provisioner.provision import ProvisionPlan
from tests.conftest import deep_merge
from tests.deploy_helpers import FAST, make_image

APPS = {"hello-web": {"stacks": ["canary"]},
        "billing": {"manifest": "manifests/billing.yaml",
                    "bake": {"smoke_commands": ["curl -fsS http://127.0.0.1:{port}{health_path}"],
                             "volume_size": 20},
                    "deploy": {"port": 9090, "capacity": {"desired": 1},
                               "health_check": {"path": "/ping"}}}}
SETTINGS = deep_merge(FAST, {"deploy": {"steps": "100"}})


@pytest.fixture
def many(clean_sandbox, kiln_settings):
    settings = kiln_settings(apps=APPS, **SETTINGS)
    parts = env_stacks.register_clusters(settings)
    assert parts == ["env-hello-web-canary", "env-billing"]
    kiln_bootstrap.run(settings, connect(settings, admin=True), yes=True,
                       parts=("prod", "env-{app}", *parts))
    return settings


def test_each_environment_stack_goes_to_the_region_kiln_looks_it_up_in(kiln_settings):
    settings = kiln_settings(apps={**APPS, "billing": deep_merge(APPS["billing"], {
        "deploy": {"region": "eu-west-1"}})}, deploy={"region": "us-west-2"},
        bake={"copy_regions": ["us-west-2", "eu-west-1"]})
    parts = env_stacks.register_clusters(settings)
    found = {(spec.part_for(settings), region) for spec, _account, region in
             kiln_bootstrap.targets(settings, None, ("env-{app}", *parts))}
    assert found == {("env-hello-web", "us-west-2"), ("env-hello-web-canary", "us-west-2"),
                     ("env-billing", "eu-west-1")}


def test_kiln_apps_own_entry_places_its_environment_stack(kiln_settings):
    """kiln.app's own kiln.apps entry moves its cluster (tasks deploy there), so bootstrap puts
    the environment stack there too."""
    settings = kiln_settings(apps={"hello-web": {"deploy": {"region": "eu-west-1"}}},
                             bake={"copy_regions": ["eu-west-1"]})
    found = {(spec.part_for(settings), account, region) for spec, account, region in
             kiln_bootstrap.targets(settings, None, ("env-{app}",))}
    assert found == {("env-hello-web", "prod", "eu-west-1")}


def test_per_app_settings_override_the_defaults(kiln_settings):
    settings = kiln_settings(apps=APPS)
    billing = apps.for_app(settings, "billing")
    assert (billing.app, billing.manifest) == ("billing", "manifests/billing.yaml")
    assert (billing.deploy.capacity.desired, billing.deploy.capacity.max) == (1, 4)
    assert billing.deploy.health_check.path == "/ping"
    assert (billing.deploy.port, apps.for_app(settings, "hello-web").deploy.port) == (9090, 8080)
    assert (billing.bake.volume_size, billing.bake.instance_type) == (20, "t3.small")
    plan = ProvisionPlan.for_release(billing, app="billing", version="1.0.0", release="1",
                                     package="billing", service="billing", repo_baseurl="u",
                                     gpgkey_url="k")
    assert plan.smoke_commands == ("curl -fsS http://127.0.0.1:9090/ping",)
    assert apps.for_app(settings, None).manifest == settings.manifest
    assert apps.clusters(settings) == [("hello-web", None), ("hello-web", "canary"),
                                       ("billing", None)]
    with pytest.raises(KilnError, match=r"--app shop: not kiln.app \(hello-web\) and not under "
                                        r"kiln.apps \(known: hello-web, billing\)"):
        apps.for_app(settings, "shop")


def test_bootstrap_makes_every_clusters_environment_and_status_lists_them(many):
    hello = connect(many)
    billing = connect(apps.for_app(many, "billing"))
    daws = hello.account("prod")
    make_image(daws, "1.0.0")
    make_image(daws, "3.1.0", app="billing")
    operations.deploy(hello, version="1.0.0", stack="canary")
    operations.deploy(billing, version="3.1.0")
    # Each environment's instances, target groups and health checks use its app's port.
    assert stacks.outputs(daws, "env-billing")["InstancePort"] == "9090"
    assert stacks.outputs(daws, "env-hello-web-canary")["InstancePort"] == "8080"
    found = {c["cluster"]: [(g["name"], g["release_id"], g["desired"]) for g in c["server_groups"]]
             for c in operations.status_all(hello)["clusters"]}
    assert found == {"hello-web": [], "hello-web-canary": [("hello-web-canary-v001", "1.0.0", 2)],
                     "billing": [("billing-v001", "3.1.0", 1)]}
    only = operations.status_all(hello, app="billing")
    assert [c["cluster"] for c in only["clusters"]] == ["billing"]
    assert only["server_groups"][0]["name"] == "billing-v001"
    with pytest.raises(KilnError, match=r"\(`invoke status --app hello-web --stack canary` "
                                        r"shows its groups\)"):
        operations.promote(hello, stack="canary")
    with pytest.raises(KilnError, match=r"`invoke bake --app billing --version 9.9.9`, then "
                                        r"`invoke ami.promote --app billing --version 9.9.9"):
        operations.deploy(billing, version="9.9.9", dry_run=True)
