"""A broken canary with real traffic flowing: its `/` answers 500 while its `/health` passes, so
it becomes healthy and takes its share of requests; the load balancer's metrics fail it (the
judgement against the baseline, or the 5xx alarm) and the canary is rolled back by itself, after
which no request reaches it.

The images are sandbox machines (an enabled web app, see machine_helpers), so Auto Scaling runs
them, the target group health-checks them for real, and the proxy in front carries the requests.
"""

from __future__ import annotations

import time

import pytest

from orchestrator import operations
from sandbox import listener_cert
from tests.conftest import deep_merge
from tests.deploy_helpers import FAST
from tests.machine_helpers import Traffic, promoted_web_image

pytestmark = pytest.mark.slow


@pytest.fixture
def deploy_overrides():
    return deep_merge(FAST, {"deploy": {
        "health_timeout": "60s", "canary": {"judge": {"min_requests": 10}}}})


def test_a_canary_that_answers_500_is_rolled_back_by_itself_and_gets_no_more_requests(
        clean_sandbox, kaws, daws, outputs):
    promoted_web_image(clean_sandbox, daws, "1.0.0", status=200)
    promoted_web_image(clean_sandbox, daws, "1.1.0", status=500)
    operations.deploy(kaws, version="1.0.0")
    traffic = Traffic(outputs["LoadBalancerDnsName"],
                      listener_cert.files(clean_sandbox.state_dir)["ca"], clients=2)
    traffic.start()
    rolled_back_at = []

    def observe(step, runner):
        if runner.plan.operation == "rollback" and step.action == "weights":
            rolled_back_at.append(time.monotonic())  # the canary is off the listener

    try:
        with pytest.raises(operations.RolledBack) as failed:
            # The watch ends as soon as the alarms or the judgement fail the canary.
            operations.canary(kaws, 10, version="1.1.0", watch="30s", observer=observe)
        after, deadline = len(traffic.seen), time.monotonic() + 60
        while len(traffic.seen) < after + 100 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        seen = traffic.stop()

    result = failed.value.result
    assert result["result"] == "rolled back"
    assert "judgement: canary 5xx rate" in str(failed.value) or "target-5xx" in str(failed.value)
    (moment,) = rolled_back_at
    before = [(status, body) for started, status, body in seen if started < moment]
    later = [(status, body) for started, status, body in seen if started > moment]
    assert (500, "version 1.1.0\n") in before  # the canary took requests while it was on
    assert len(later) >= 100
    assert set(later) == {(200, "version 1.0.0\n")}  # and none once it was rolled back
    groups = {g["name"]: g for g in operations.status(kaws)["server_groups"]}
    assert groups["hello-web-v002"]["state"] == "failed"
    assert groups["hello-web-v002"]["desired"] == 0 and groups["hello-web-v001"]["weight"] == 100
