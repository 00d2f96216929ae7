"""sandbox/network: load balancers as loopback reverse proxies, real health checks, draining."""

from __future__ import annotations

import ipaddress
import os
import signal
import time
from collections import Counter
from pathlib import Path

import boto3
import pytest

from tests.network_helpers import (
    admin_session,
    all_healthy,
    balancer_groups,
    closed,
    forward,
    fronts_pid,
    get,
    health,
    until,
)


def test_dns_name_is_a_loopback_address_answering_on_the_listener_port(lb):
    assert ipaddress.ip_address(lb["dns"]).is_loopback
    all_healthy(lb)
    status, body = get(lb["dns"], 80)
    assert status == 200 and body in ("blue\n", "green\n")


def test_weighted_forward_splits_requests_by_weight(lb):
    all_healthy(lb)
    answers = Counter(get(lb["dns"], 80)[1].strip() for _ in range(1000))
    assert abs(answers["green"] / 1000 - 0.10) <= 0.02
    assert abs(answers["blue"] / 1000 - 0.90) <= 0.02
    assert lb["apps"]["green"].hits["/"] == answers["green"]


def test_health_checks_are_real_and_reported(lb):
    all_healthy(lb)
    green = lb["apps"]["green"]
    assert green.hits["/health"] >= 2
    green.health = 503
    until(lambda: _assert_equal(health(lb["groups"]["green"]), [{
        "State": "unhealthy", "Reason": "Target.ResponseCodeMismatch",
        "Description": "Health checks failed with these codes: [503]"}]))
    green.health = 200
    until(lambda: _assert_equal([h["State"] for h in health(lb["groups"]["green"])],
                                ["healthy"]))


def test_health_checks_and_requests_end_their_connections_cleanly(lb):
    all_healthy(lb)
    for _ in range(20):
        assert get(lb["dns"], 80)[0] == 200
    checked = {name: app.hits["/health"] for name, app in lb["apps"].items()}
    until(lambda: _more_checks(lb, checked))
    # An ALB reads the whole answer: no target sees its connection reset (its log stays clean).
    assert {name: app.errors for name, app in lb["apps"].items()} == {"blue": 0, "green": 0}


def _more_checks(lb, checked: dict) -> None:
    assert all(app.hits["/health"] >= checked[name] + 3 for name, app in lb["apps"].items())


def test_no_healthy_target_group_target_fails_open(lb):
    all_healthy(lb)
    lb["apps"]["blue"].health = 500
    until(lambda: _assert_equal([h["State"] for h in health(lb["groups"]["blue"])],
                                ["unhealthy"]))
    assert get(lb["dns"], 80)[0] == 200  # an ALB sends to all targets when none is healthy


def test_deregistration_drains_then_forgets(lb):
    all_healthy(lb)
    elbv2 = boto3.client("elbv2")
    blue = lb["groups"]["blue"]
    elbv2.modify_target_group_attributes(TargetGroupArn=blue, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "120"}])
    elbv2.deregister_targets(TargetGroupArn=blue,
                             Targets=[{"Id": "127.0.0.1", "Port": lb["apps"]["blue"].port}])
    assert health(blue) == [{"State": "draining", "Reason": "Target.DeregistrationInProgress",
                             "Description": "Target deregistration is in progress"}]
    before = lb["apps"]["blue"].hits["/"]
    statuses = Counter(get(lb["dns"], 80)[0] for _ in range(50))
    assert lb["apps"]["blue"].hits["/"] == before  # no new requests to a draining target
    assert statuses[503] > 0  # blue's group has no targets left: the ALB answers 503
    until(lambda: _assert_equal(health(blue), []), timeout=10)


def test_rules_route_by_header_before_the_default(lb):
    all_healthy(lb)
    boto3.client("elbv2").create_rule(
        ListenerArn=lb["listener"], Priority=5,
        Conditions=[{"Field": "http-header",
                     "HttpHeaderConfig": {"HttpHeaderName": "X-Env", "Values": ["ann"]}}],
        Actions=[{"Type": "forward", "TargetGroupArn": lb["groups"]["green"]}])
    assert {get(lb["dns"], 80, headers={"X-Env": "ann"})[1] for _ in range(20)} == {"green\n"}


def test_fixed_response_and_listener_lifecycle(lb, clean_sandbox):
    elbv2 = boto3.client("elbv2")
    elbv2.modify_listener(ListenerArn=lb["listener"], DefaultActions=[{
        "Type": "fixed-response", "FixedResponseConfig": {
            "StatusCode": "503", "ContentType": "text/plain", "MessageBody": "not yet"}}])
    assert get(lb["dns"], 80) == (503, "not yet")
    elbv2.delete_listener(ListenerArn=lb["listener"])
    with pytest.raises(ConnectionRefusedError):
        get(lb["dns"], 80)
    listener = elbv2.create_listener(
        LoadBalancerArn=lb["arn"], Protocol="HTTP", Port=8081,
        DefaultActions=[forward(lb["groups"], blue=1)])["Listeners"][0]
    all_healthy({"groups": {"blue": lb["groups"]["blue"]}})
    assert get(lb["dns"], int(listener["Port"]))[1] == "blue\n"
    clean_sandbox.reset()
    with pytest.raises(ConnectionRefusedError):
        get(lb["dns"], 8081)


def _assert_equal(actual, expected) -> None:
    assert actual == expected


def test_a_load_balancer_never_forwards_to_itself(lb):
    elbv2 = boto3.client("elbv2")
    green = lb["groups"]["green"]
    elbv2.register_targets(TargetGroupArn=green, Targets=[{"Id": lb["dns"], "Port": 80}])
    elbv2.deregister_targets(TargetGroupArn=green,
                             Targets=[{"Id": "127.0.0.1", "Port": lb["apps"]["green"].port}])
    elbv2.modify_listener(ListenerArn=lb["listener"], DefaultActions=[forward(lb["groups"],
                                                                             green=1)])
    assert get(lb["dns"], 80, timeout=5)[0] == 502  # not a loop: its own address is no target


def _own_balancer(box) -> str:
    """A load balancer answering on its listener in the sandbox `box`; its address."""
    own = admin_session(box)
    elbv2 = own.client("elbv2")
    ec2 = own.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.6.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.6.{n}.0/24",
                                 AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
               for n, z in ((1, "a"), (2, "b"))]
    balancer = elbv2.create_load_balancer(
        Name="own", Subnets=subnets,
        SecurityGroups=balancer_groups(ec2, vpc, 80))["LoadBalancers"][0]
    elbv2.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP",
                          Port=80, DefaultActions=[{"Type": "fixed-response",
                                                    "FixedResponseConfig": {
                                                        "StatusCode": "200"}}])
    assert get(balancer["DNSName"], 80)[0] == 200
    return balancer["DNSName"]


def _gone(*pids: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    return not any(_alive(pid) for pid in pids)


def test_down_ends_the_server_and_every_proxy(tmp_path, sandbox_box):
    from sandbox.control import Sandbox

    box = Sandbox(tmp_path / "own")
    box.up()
    try:
        address = _own_balancer(box)
        pid, proxies = box.moto.pid, fronts_pid(box)
        assert proxies != pid  # the listeners live in a process of their own
    finally:
        box.down()
    assert _gone(pid, proxies)
    with pytest.raises(ConnectionRefusedError):
        get(address, 80)


def _alive(pid: int) -> bool:
    """Running: one of its threads has not ended (a zombie waiting for this test process to
    reap it has ended; a leader that ended before its other threads has not, as they still hold
    its files)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return True
        except OSError:
            continue
    return False


def test_at_the_connection_budget_a_flooding_client_gets_no_more_and_a_new_one_gets_in(
        tmp_path, sandbox_box):
    """With every connection of the budget taken by clients holding 16 each and trickling their
    heads, their next connections are closed at once (not their oldest: closing the new one is
    the cheapest answer, so accepting keeps up with a flood), and a new client is answered.
    Killing the server then ends the load balancers' process too."""
    import resource

    from sandbox.control import Sandbox

    box = Sandbox(tmp_path / "own")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (640, hard))  # the balancers' budget: 320
    try:
        box.up()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    flood, more = [], []
    try:
        address = _own_balancer(box)
        box.set_time_scale(1)  # the header timeout at its real 10 s while this runs
        flood = [_slow(address, f"127.0.5.{1 + n % 20}") for n in range(320)]
        proxies = fronts_pid(box)
        # All of them in the balancers' hands (beside its eight listening sockets and its
        # loop's wake-up pair): the budget is taken.
        assert _within(lambda: _sockets(proxies) >= 320 + 10)
        more = [_slow(address, "127.0.5.1") for _ in range(5)]
        assert _within(lambda: all(closed(sock) for sock in more))
        # Not their oldest (one or two, had the budget a connection or two less for them).
        assert sum(closed(sock) for sock in flood) <= 2
        started = time.monotonic()
        assert get(address, 80, timeout=5)[0] == 200
        assert time.monotonic() - started < 1
        # The load balancers' process ends with the server however it ends (the kernel tells
        # it), here killed with all those connections open.
        pid = box.moto.pid
        os.kill(pid, signal.SIGKILL)
        assert _gone(pid, proxies)
        with pytest.raises(ConnectionRefusedError):
            get(address, 80)
    finally:
        for sock in flood + more:
            sock.close()
        box.down()


def _within(check, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _sockets(pid: int) -> int:
    return sum(1 for fd in Path(f"/proc/{pid}/fd").iterdir()
               if os.readlink(fd).startswith("socket:"))


def _slow(address: str, source: str):
    """A connection that has sent part of a request head."""
    import socket

    sock = socket.create_connection((address, 80), timeout=2, source_address=(source, 0))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n")
    return sock


