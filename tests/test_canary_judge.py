"""orchestrator/judge.py: the canary against the baseline, from the target groups' own metrics
(real traffic through a sandbox load balancer), and the cluster's URL."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime

import boto3
import pytest

from orchestrator import judge, operations
from sandbox import listener_cert
from tests.network_helpers import all_healthy, get, https_get, until

LIMITS = judge.Thresholds(min_requests=10, max_error_rate_increase=0.01, max_p99_ratio=1.5,
                          min_p99_increase=0.1)


def judged(lb, since, limits=LIMITS) -> dict:
    return judge.judge(boto3.client("cloudwatch"), lb["arn"].split(":loadbalancer/")[1],
                       ("green", lb["groups"]["green"]), ("blue", lb["groups"]["blue"]), since,
                       limits)


def traffic(lb, count: int = 200) -> None:
    for _ in range(count):
        get(lb["dns"], 80)


def settled(lb, since, requests: int, limits=LIMITS) -> dict:
    """The judgement once all `requests` are in the metrics."""
    found = {}

    def check():
        found.update(judged(lb, since, limits))
        assert found["canary"]["requests"] + found["baseline"]["requests"] == requests

    until(check, timeout=10)
    return found


@pytest.fixture
def since():
    return datetime.now(UTC)


def test_the_baselines_own_errors_do_not_fail_a_good_canary(lb, since):
    all_healthy(lb)
    lb["apps"]["blue"].status = 500  # the baseline fails, the canary (10 %) does not
    traffic(lb)
    found = settled(lb, since, 200)
    assert found["verdict"] == "pass", found
    assert (found["canary"]["requests"], found["canary"]["errors"]) == (20, 0)
    assert found["baseline"]["error_rate"] == 1.0


def test_a_ten_percent_canarys_errors_are_not_drowned_in_the_total(lb, since):
    all_healthy(lb)
    lb["apps"]["green"].status = 500
    traffic(lb)
    found = settled(lb, since, 200)
    assert found["verdict"] == "fail"
    assert found["canary"]["error_rate"] == 1.0 and found["baseline"]["error_rate"] == 0.0
    assert "canary 5xx rate 100.00% above the baseline's 0.00%" in found["reasons"][0]
    assert "judgement: fail" in judge.line(found)


def test_a_slow_canary_fails_on_p99(lb, since):
    all_healthy(lb)
    lb["apps"]["green"].delay = 0.3
    traffic(lb, 100)
    found = settled(lb, since, 100)
    assert found["verdict"] == "fail", found
    assert found["canary"]["p99"] >= 0.3 > found["baseline"]["p99"]
    assert "p99" in found["reasons"][0]


def test_no_verdict_before_enough_canary_requests(lb, since):
    all_healthy(lb)
    lb["apps"]["green"].status = 500
    traffic(lb, 50)  # 5 canary requests
    found = settled(lb, since, 50)
    assert found["verdict"] == "waiting"


def watcher(lb, **limits) -> judge.Watcher:
    return judge.Watcher(boto3.client("cloudwatch"), lb["arn"].split(":loadbalancer/")[1],
                         ("green", lb["groups"]["green"]), ("blue", lb["groups"]["blue"]),
                         dataclasses.replace(LIMITS, **limits))


def test_eight_of_twenty_requests_is_no_verdict_and_the_watch_fails(lb, since):
    all_healthy(lb)
    lb["apps"]["green"].status = 500
    # The watch begins before the traffic: its window starts at its own minute, so a watch
    # made after the traffic would miss it whenever a minute turned in between.
    watch = watcher(lb, min_requests=20, max_wait=2)
    traffic(lb, 80)  # 8 canary requests, all 500
    settled(lb, since, 80)
    watch()
    assert watch.waiting
    with pytest.raises(judge.NoVerdict) as failed:
        watch.await_verdict()
    assert "canary served 8 of the 20 requests needed for a verdict" in str(failed.value)
    assert "no_verdict: fail" in str(failed.value)


def test_no_verdict_passes_only_when_configured_so(lb, since):
    all_healthy(lb)
    watch = watcher(lb, max_wait=1, no_verdict="pass")
    watch()
    watch.await_verdict()
    assert watch.waiting and watch.last["canary"]["requests"] == 0


def test_a_watch_short_of_evidence_keeps_judging_until_it_has_it(lb, since):
    all_healthy(lb)
    lb["apps"]["green"].status = 500
    watch = watcher(lb, max_wait=60)
    watch()
    assert watch.waiting
    later = threading.Timer(1.5, traffic, (lb, 200))  # the evidence comes after the watch
    later.start()
    try:
        with pytest.raises(judge.CanaryFailed) as failed:
            watch.await_verdict()
    finally:
        later.join()
    assert not isinstance(failed.value, judge.NoVerdict)
    assert watch.last["verdict"] == "fail" and "canary 5xx rate" in str(failed.value)


def test_status_prints_the_load_balancers_https_url(kaws, outputs):
    result = operations.status(kaws)
    assert result["url"] == f"https://{outputs['LoadBalancerDnsName']}/"
    assert operations.status_lines(result)[0].endswith(f"at {result['url']}")
    host = outputs["LoadBalancerDnsName"]
    ca = listener_cert.files(kaws.settings.sandbox.state_dir)["ca"]
    name = f"hello-web.{listener_cert.DOMAIN}"
    assert https_get(host, 443, name, ca) == (503, "no server group is serving yet")
    assert get(host, 80, "/a?b=1", headers={"Host": name}) == (301, "")
