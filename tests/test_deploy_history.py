"""Rollback and teardown follow what each deploy replaced (kiln:replaces, kiln:state tags)."""

import pytest

from cloud.errors import KilnError
from orchestrator import operations
from tests.conftest import deep_merge
from tests.deploy_helpers import FAST, make_image

QUICK = deep_merge(FAST, {"deploy": {"steps": "100"}})


@pytest.fixture
def deploy_overrides():
    return QUICK


def states(kaws) -> dict[str, tuple[str, str, int]]:
    return {g["name"]: (g["version"], g["state"], g["weight"])
            for g in operations.status(kaws)["server_groups"]}


def deploy_all(kaws, daws, *versions):
    for version in versions:
        make_image(daws, version)
        operations.deploy(kaws, version=version)


def test_each_group_records_what_it_replaced(kaws, daws, outputs):
    deploy_all(kaws, daws, "1.0.0", "2.0.0")
    found = {g["name"]: g["replaces"] for g in operations.status(kaws)["server_groups"]}
    assert found == {"hello-web-v001": None, "hello-web-v002": "hello-web-v001"}
    asg = daws.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=["hello-web-v002"])["AutoScalingGroups"][0]
    assert {t["Key"]: t["Value"] for t in asg["Tags"]}["kiln:replaces"] == "hello-web-v001"


def test_rollback_never_returns_to_a_rolled_back_release(kaws, daws, outputs):
    deploy_all(kaws, daws, "1.0.0", "2.0.0")
    operations.rollback(kaws)
    assert states(kaws) == {"hello-web-v001": ("1.0.0", "active", 100),
                            "hello-web-v002": ("2.0.0", "rolled-back", 0)}
    deploy_all(kaws, daws, "3.0.0")
    planned = operations.rollback(kaws, dry_run=True)
    assert planned["plan"]["new_group"] == "hello-web-v001"
    assert "back to hello-web-v001 (1.0.0)" in planned["plan"]["summary"]
    operations.rollback(kaws)
    assert states(kaws)["hello-web-v001"] == ("1.0.0", "active", 100)
    assert states(kaws)["hello-web-v003"] == ("3.0.0", "rolled-back", 0)
    before = states(kaws)
    with pytest.raises(KilnError, match="nothing to roll back to: hello-web-v001 .* replaced "
                                        "no server group"):
        operations.rollback(kaws)
    assert states(kaws) == before


def test_rollback_walks_back_the_chain_of_deploys(kaws, daws, outputs):
    deploy_all(kaws, daws, "1.0.0", "2.0.0", "3.0.0")
    operations.rollback(kaws)
    assert states(kaws)["hello-web-v002"][1:] == ("active", 100)
    operations.rollback(kaws)
    assert {n: s[1] for n, s in states(kaws).items()} == {
        "hello-web-v001": "active", "hello-web-v002": "rolled-back",
        "hello-web-v003": "rolled-back"}


def test_teardown_keeps_the_rollback_target_and_removes_rolled_back_groups_first(
        kaws, daws, outputs):
    deploy_all(kaws, daws, "1.0.0", "2.0.0")
    operations.rollback(kaws)              # v002 rolled back, v001 serves
    deploy_all(kaws, daws, "3.0.0")        # v003 replaces v001
    planned = operations.teardown(kaws, keep=1, dry_run=True)
    deleted = [s["group"] for s in planned["plan"]["steps"] if s["action"] == "delete"]
    assert deleted == ["hello-web-v002"]
    operations.teardown(kaws, keep=0)
    assert sorted(states(kaws)) == ["hello-web-v001", "hello-web-v003"]
    operations.rollback(kaws)
    assert states(kaws)["hello-web-v001"] == ("1.0.0", "active", 100)


def test_teardown_removes_the_oldest_disabled_beyond_keep(kaws, daws, outputs):
    deploy_all(kaws, daws, "1.0.0", "1.1.0", "1.2.0", "1.3.0")
    planned = operations.teardown(kaws, keep=1, dry_run=True)
    deleted = [s["group"] for s in planned["plan"]["steps"] if s["action"] == "delete"]
    assert deleted == ["hello-web-v001", "hello-web-v002"]


def test_manual_rollback_of_a_healthy_canary_is_rolled_back_not_failed(kaws, daws, outputs):
    deploy_all(kaws, daws, "1.0.0")
    make_image(daws, "1.1.0")
    operations.canary(kaws, 10, version="1.1.0")
    operations.rollback(kaws)
    assert states(kaws)["hello-web-v002"] == ("1.1.0", "rolled-back", 0)
    assert states(kaws)["hello-web-v001"] == ("1.0.0", "active", 100)
