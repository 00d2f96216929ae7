"""A deploy waiting for health says how it goes, and stops early when every target has failed
its checks for longer than the target group's own failure window."""

import time

import pytest

from orchestrator import operations
from tests.conftest import deep_merge
from tests.deploy_helpers import FAST, make_image, make_unhealthy

# A long timeout: only the failure window (6 s × 2 checks) may end the wait this early.
SLOW_TIMEOUT = deep_merge(FAST, {"deploy": {"health_timeout": "10m", "health_check": {
    "interval": 6, "unhealthy_threshold": 2}}})


@pytest.fixture
def deploy_overrides():
    return SLOW_TIMEOUT


def test_a_deploy_whose_targets_all_fail_stops_after_the_failure_window(kaws, daws, outputs,
                                                                        capsys):
    make_image(daws, "1.0.0")

    def break_it(step, runner):
        if step.action == "create":
            make_unhealthy(daws, step.group)

    started = time.monotonic()
    with pytest.raises(operations.RolledBack, match=r"every target has failed its health checks "
                                                    r"for over 12s .*Target.FailedHealthChecks"):
        operations.deploy(kaws, version="1.0.0", observer=break_it)
    assert time.monotonic() - started < 90, "waited for the 10 min timeout"
    err = capsys.readouterr().err
    assert "health: hello-web-v001 0/2 healthy after" in err
    assert "unhealthy (Target.FailedHealthChecks)" in err
    tg = daws.client("elbv2").describe_target_groups(Names=["hello-web-v001"])["TargetGroups"][0]
    assert (tg["HealthCheckIntervalSeconds"], tg["UnhealthyThresholdCount"]) == (6, 2)


def test_a_deploy_waiting_for_health_prints_its_progress(kaws, daws, outputs, capsys):
    make_image(daws, "1.0.0")
    assert operations.deploy(kaws, version="1.0.0")["result"] == "ok"
    assert "health: hello-web-v001 2/2 healthy after" in capsys.readouterr().err
