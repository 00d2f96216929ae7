"""A promote stopped at its last step (all traffic on the new group, the old one still tagged
active at weight 0): the next promote finishes it, the next rollback undoes it."""

from __future__ import annotations

import pytest

from orchestrator import operations
from tests.conftest import deep_merge
from tests.deploy_helpers import FAST, make_image


@pytest.fixture
def deploy_overrides():
    return deep_merge(FAST, {"deploy": {"steps": "50,100"}})


@pytest.fixture
def deployed(kaws, daws, outputs):
    make_image(daws, "1.0.0")
    make_image(daws, "1.1.0")
    operations.deploy(kaws, version="1.0.0")
    return outputs


def groups(kaws):
    return {g["name"]: g for g in operations.status(kaws)["server_groups"]}


def stop_before_disable(step, runner):
    if step.action == "weights" and step.weights.get("hello-web-v002") == 100:
        raise KeyboardInterrupt  # as a kill at the last step: the disable never runs


@pytest.mark.parametrize("next_command", ["promote", "rollback"])
def test_promote_stopped_at_its_last_step_is_settled_by_the_next_command(
        kaws, deployed, next_command):
    operations.canary(kaws, 10, version="1.1.0")
    with pytest.raises(KeyboardInterrupt):
        operations.promote(kaws, observer=stop_before_disable)
    middle = groups(kaws)
    assert (middle["hello-web-v001"]["weight"], middle["hello-web-v001"]["state"]) == (
        0, "active")
    assert middle["hello-web-v002"]["weight"] == 100
    getattr(operations, next_command)(kaws)
    final = groups(kaws)
    winner, loser = (("hello-web-v002", "hello-web-v001") if next_command == "promote"
                     else ("hello-web-v001", "hello-web-v002"))
    assert (final[winner]["weight"], final[winner]["state"]) == (100, "active")
    assert final[loser]["weight"] == 0
    assert final[loser]["state"] not in ("active", "canary")
