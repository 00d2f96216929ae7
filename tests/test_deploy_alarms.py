"""The alarms that judge a rollout: composite ones are watched too, and a name that does not
exist fails the plan before anything changes."""

import pytest

from cloud.errors import KilnError
from orchestrator import operations
from tests.conftest import deep_merge
from tests.deploy_helpers import FAST, admin_of, make_image

COMPOSITE = "hello-web-canary-composite"


@pytest.fixture
def deploy_overrides():
    return deep_merge(FAST, {"deploy": {"steps": "100", "alarms": [COMPOSITE]}})


@pytest.fixture
def deployed(kaws, daws, outputs):
    alarm = outputs["AlarmNames"].split(",")[0]
    admin_of(daws).client("cloudwatch").put_composite_alarm(AlarmName=COMPOSITE,
                                                  AlarmRule=f'ALARM("{alarm}")')
    make_image(daws, "1.0.0")
    make_image(daws, "1.1.0")
    operations.deploy(kaws, version="1.0.0")
    return outputs


def test_a_composite_alarm_in_alarm_rolls_the_canary_back(kaws, daws, deployed):
    def fire(step, runner):
        if step.action == "weights" and step.weights.get("hello-web-v002"):
            admin_of(daws).client("cloudwatch").set_alarm_state(
                AlarmName=COMPOSITE, StateValue="ALARM", StateReason="canary errors")

    with pytest.raises(operations.RolledBack, match=f"alarm {COMPOSITE} in ALARM"):
        operations.canary(kaws, 20, version="1.1.0", watch="5s", observer=fire)


def test_an_alarm_that_does_not_exist_fails_the_plan(kaws, daws, deployed):
    kaws.settings.deploy["alarms"] = [COMPOSITE, "hello-web-typo"]
    with pytest.raises(KilnError, match="hello-web-typo"):
        operations.canary(kaws, 20, version="1.1.0", dry_run=True)
    names = [g["name"] for g in operations.status(kaws)["server_groups"]]
    assert names == ["hello-web-v001"]
