"""A broken canary with real traffic flowing: its `/` answers 500 while its `/health` passes, so
it becomes healthy and takes its share of requests; the load balancer's metrics fail it (the
judgement against the baseline, or the 5xx alarm) and the canary is rolled back by itself, after
which no request reaches it.

The images are sandbox machines (an enabled web app, see machine_helpers), so Auto Scaling runs
them, the target group health-checks them for real, and the proxy in front carries the requests.
"""

from __future__ import annotations

import threading
import time

import pytest

from cloud import tags as kiln_tags
from orchestrator import operations
from sandbox import listener_cert
from tests.conftest import deep_merge
from tests.deploy_helpers import FAST, admin_of
from tests.image_helpers import available
from tests.machine_helpers import web_image
from tests.network_helpers import https_get

pytestmark = pytest.mark.slow
MAX_REQUESTS = 5000  # the traffic loop's bound, whatever happens


@pytest.fixture
def deploy_overrides():
    return deep_merge(FAST, {"deploy": {
        "health_timeout": "60s", "canary": {"judge": {"min_requests": 10}}}})


def promoted_web_image(box, daws, version: str, status: int) -> str:
    """A machine image of the web app in the deploy account, tagged as a promoted image."""
    ec2 = admin_of(daws).client("ec2", daws.region)
    image = web_image(box, ec2, f"web-{version}", status=status, text=f"version {version}")
    available(ec2, image)
    tags = kiln_tags.kiln_tags("hello-web", "image", run_id="20250101T000000-abcdef",
                               version=version)
    ec2.create_tags(Resources=[image], Tags=kiln_tags.to_list(tags))
    return image


class Traffic(threading.Thread):
    """GETs / through the load balancer's HTTPS listener, one after another, each recorded as
    (started, status, body); at most MAX_REQUESTS."""

    def __init__(self, address: str, cafile):
        super().__init__(daemon=True)
        self.address, self.cafile = address, cafile
        self.name_ = f"hello-web.{listener_cert.DOMAIN}"
        self.seen: list[tuple[float, int, str]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set() and len(self.seen) < MAX_REQUESTS:
            started = time.monotonic()
            try:
                status, body = https_get(self.address, 443, self.name_, self.cafile, timeout=5)
            except OSError as error:
                status, body = 0, str(error)
            self.seen.append((started, status, body))

    def stop(self) -> list[tuple[float, int, str]]:
        self.halt.set()
        self.join(30)
        return self.seen


def test_a_canary_that_answers_500_is_rolled_back_by_itself_and_gets_no_more_requests(
        clean_sandbox, kaws, daws, outputs):
    promoted_web_image(clean_sandbox, daws, "1.0.0", status=200)
    promoted_web_image(clean_sandbox, daws, "1.1.0", status=500)
    operations.deploy(kaws, version="1.0.0")
    traffic = Traffic(outputs["LoadBalancerDnsName"],
                      listener_cert.files(clean_sandbox.state_dir)["ca"])
    traffic.start()
    rolled_back_at = []

    def observe(step, runner):
        if runner.plan.operation == "rollback" and step.action == "weights":
            rolled_back_at.append(time.monotonic())  # the canary is off the listener

    try:
        with pytest.raises(operations.RolledBack) as failed:
            operations.canary(kaws, 10, version="1.1.0", watch="10s", observer=observe)
        after = len(traffic.seen)
        while len(traffic.seen) < after + 100:
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
