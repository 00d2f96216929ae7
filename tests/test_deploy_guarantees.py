"""The deploy guarantees, each checked against the sandbox.

A Sampler reads the listener, the Auto Scaling groups and target health from outside (its own
session) while an operation runs, so the checks do not rely on Kiln's own view of the cluster.
"""

import threading
import time

import pytest

from cloud import locks
from cloud.errors import KilnError
from orchestrator import environment, operations
from orchestrator.health import AlarmFired
from tests.conftest import deep_merge
from tests.deploy_helpers import (
    FAST,
    Sampler,
    admin_of,
    credentials,
    make_image,
    make_unhealthy,
    serving_capacity,
    unhealthy_serving,
)


@pytest.fixture
def deploy_overrides():
    return deep_merge(FAST, {"deploy": {"steps": "50,100"}})


@pytest.fixture
def deployed(kaws, daws, outputs):
    """v001 (1.0.0) serving all traffic at 2 instances; image 1.1.0 ready to roll out."""
    make_image(daws, "1.0.0")
    make_image(daws, "1.1.0")
    operations.deploy(kaws, version="1.0.0")
    return outputs


def groups(kaws):
    return {g["name"]: g for g in operations.status(kaws)["server_groups"]}


@pytest.fixture
def sampler(daws, deployed):
    thread = Sampler("us-east-1", deployed["ListenerArn"], credentials(daws))
    thread.start()
    yield thread
    thread.stop()


def check_samples(samples, baseline_desired):
    assert len(samples) > 5, "the sampler must have seen the operation"
    for sample in samples:
        assert not unhealthy_serving(sample), sample
        assert serving_capacity(sample) >= baseline_desired, sample


def test_capacity_and_health_hold_through_canary_promote_rollback(kaws, sampler):
    operations.canary(kaws, 25, version="1.1.0")
    operations.promote(kaws)
    after_promote = groups(kaws)
    operations.rollback(kaws)
    samples = sampler.stop()
    check_samples(samples, baseline_desired=2)
    assert (after_promote["hello-web-v002"]["weight"], after_promote["hello-web-v001"]["state"]
            ) == (100, "disabled")
    final = groups(kaws)
    assert (final["hello-web-v001"]["weight"], final["hello-web-v001"]["state"]) == (100, "active")
    assert final["hello-web-v002"]["state"] == "rolled-back"
    weights_seen = {tuple(sorted((n, g["weight"]) for n, g in s["groups"].items()))
                    for s in samples}
    assert (("hello-web-v001", 75), ("hello-web-v002", 25)) in weights_seen


def test_unhealthy_canary_never_gets_traffic_and_is_rolled_back(kaws, daws, sampler):
    def break_it(step, runner):
        if step.action == "create":
            make_unhealthy(daws, step.group)

    with pytest.raises(operations.RolledBack, match="0 of 1 instances InService and healthy"):
        operations.canary(kaws, 10, version="1.1.0", observer=break_it)
    samples = sampler.stop()
    check_samples(samples, baseline_desired=2)
    assert all(s["groups"].get("hello-web-v002", {"weight": 0})["weight"] == 0 for s in samples)
    final = groups(kaws)
    assert (final["hello-web-v002"]["state"], final["hello-web-v002"]["desired"]) == ("failed", 0)
    assert final["hello-web-v001"]["weight"] == 100


def test_old_group_is_not_disabled_while_the_new_one_is_unhealthy(kaws, daws, deployed):
    operations.canary(kaws, 10, version="1.1.0")
    make_unhealthy(daws, "hello-web-v002")
    executed = []
    with pytest.raises(operations.RolledBack):
        operations.promote(kaws, observer=lambda step, runner: executed.append(step.action))
    assert "disable" not in executed
    final = groups(kaws)
    assert (final["hello-web-v001"]["state"], final["hello-web-v001"]["weight"]) == ("active", 100)
    assert final["hello-web-v001"]["healthy"] == 2
    assert final["hello-web-v002"]["state"] == "failed"


def test_alarm_during_the_watch_rolls_the_canary_back(kaws, daws, deployed):
    alarm = deployed["AlarmNames"].split(",")[0]

    def fire(step, runner):
        if step.action == "weights" and "hello-web-v002" in step.weights and \
                step.weights["hello-web-v002"] > 0:
            admin_of(daws).client("cloudwatch").set_alarm_state(
                AlarmName=alarm, StateValue="ALARM", StateReason="5xx from the canary")

    with pytest.raises(operations.RolledBack) as failure:
        operations.canary(kaws, 20, version="1.1.0", watch="30s", observer=fire)
    assert f"alarm {alarm} in ALARM" in str(failure.value)
    result = failure.value.result
    assert result["result"] == "rolled back" and result["api_calls"] > 0
    final = groups(kaws)
    v2 = final["hello-web-v002"]
    assert (v2["weight"], v2["on_listener"], v2["desired"], v2["state"]) == (0, False, 0, "failed")
    assert final["hello-web-v001"]["weight"] == 100


@pytest.mark.parametrize("deploy_overrides", [deep_merge(FAST, {"deploy": {
    "steps": "50,100", "canary": {"judge": {"no_verdict": "pass", "max_wait": "0"}}}})])
def test_watch_passes_when_alarms_stay_ok(kaws, deployed):
    # No request reaches the canary here: only no_verdict: pass lets a watch without a verdict
    # pass (tests/test_watch.py: without it, it fails).
    started = time.monotonic()
    result = operations.canary(kaws, 10, version="1.1.0", watch="2s")
    assert result["result"] == "ok" and time.monotonic() - started >= 2
    assert result["api_calls_by_operation"]["cloudwatch:DescribeAlarms"] < 10  # backoff


def test_second_operation_fails_at_once_naming_the_holder(kaws, daws, deployed):
    env = environment.load(kaws)
    with locks.lease(daws, env.lock_table, "cluster/hello-web", "canary by alice@ci"):
        started = time.monotonic()
        with pytest.raises(locks.LockHeld, match="locked by canary by alice@ci since 20"):
            operations.canary(kaws, 10, version="1.1.0")
        # At once: well inside one lease (60 s), which is what waiting for the holder would take.
        assert time.monotonic() - started < 30
    assert "hello-web-v002" not in groups(kaws)


def test_live_lease_needs_force_unlock_an_expired_one_is_taken_over(kaws, daws, deployed):
    env = environment.load(kaws)
    live = locks.lease(daws, env.lock_table, "cluster/hello-web", "promote by bob", 60)
    live.__enter__()  # held (and renewed) by a process on a host known to be gone
    with pytest.raises(locks.LockHeld, match="--force-unlock takes it over"):
        operations.canary(kaws, 10, version="1.1.0")
    assert operations.canary(kaws, 10, version="1.1.0", force_unlock=True)["result"] == "ok"
    live.__exit__(None, None, None)
    assert locks.holder(daws, env.lock_table, "cluster/hello-web") is None
    daws.client("dynamodb").put_item(TableName=env.lock_table, Item={  # a dead holder's lease
        "LockKey": {"S": "cluster/hello-web"}, "Owner": {"S": "rollback by carol"},
        "Token": {"S": "dead"}, "Since": {"S": "2026-01-01T00:00:00Z"}, "ExpiresAt": {"N": "1"}})
    assert operations.rollback(kaws)["result"] == "ok"
    assert locks.holder(daws, env.lock_table, "cluster/hello-web") is None


def interrupt_after_first_shift(step, runner):
    if step.action == "weights" and 0 < step.weights.get("hello-web-v002", 0) < 100:
        raise KeyboardInterrupt


@pytest.mark.parametrize("next_command", ["promote", "rollback"])
def test_interrupted_promote_leaves_a_healthy_cluster_the_next_command_settles(
        kaws, daws, deployed, next_command):
    operations.canary(kaws, 10, version="1.1.0")
    with pytest.raises(KeyboardInterrupt):
        operations.promote(kaws, observer=interrupt_after_first_shift)
    middle = groups(kaws)
    assert (middle["hello-web-v001"]["weight"], middle["hello-web-v002"]["weight"]) == (50, 50)
    assert all(g["healthy"] == g["desired"] for g in middle.values() if g["weight"])
    env = environment.load(kaws)
    assert locks.holder(daws, env.lock_table, "cluster/hello-web") is None
    getattr(operations, next_command)(kaws)
    final = groups(kaws)
    winner, loser = (("hello-web-v002", "hello-web-v001") if next_command == "promote"
                     else ("hello-web-v001", "hello-web-v002"))
    assert (final[winner]["weight"], final[winner]["state"]) == (100, "active")
    assert final[loser]["weight"] == 0


def test_interrupted_canary_before_traffic_can_be_promoted(kaws, deployed):
    def stop_after_create(step, runner):
        if step.action == "create":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        operations.canary(kaws, 10, version="1.1.0", observer=stop_after_create)
    assert groups(kaws)["hello-web-v001"]["weight"] == 100
    operations.promote(kaws)
    assert groups(kaws)["hello-web-v002"]["weight"] == 100


def asg_names(daws):
    return sorted(g["AutoScalingGroupName"] for g in daws.client(
        "autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"])


BAD_INPUT = [
    (lambda k: operations.canary(k, 0, version="1.1.0"), "--percent: 0 is outside 1–99"),
    (lambda k: operations.canary(k, 100, version="1.1.0"), "--percent: 100 is outside 1–99"),
    (lambda k: operations.canary(k, "ten", version="1.1.0"), "--percent: 'ten' is not"),
    (lambda k: operations.canary(k, 10, version="9.9.9"),
     "no available image of hello-web version 9.9.9 in account prod (222222222222)"),
    (lambda k: operations.canary(k, 10, ami="ami-0123456789abcdef0"),
     "AMI ami-0123456789abcdef0 is not available in account prod (222222222222), region "
     "us-east-1"),
    (lambda k: operations.promote(k), "has no canary to promote"),
    (lambda k: operations.rollback(k), "nothing to roll back to"),
    (lambda k: operations.promote(k, steps="50,20"), "--steps: '50,20' must end at 100"),
]


def test_bad_input_is_one_line_and_changes_nothing(kaws, daws, deployed):
    before = (asg_names(daws), groups(kaws)["hello-web-v001"]["weight"])
    for call, message in BAD_INPUT:
        with pytest.raises(KilnError) as error:
            call(kaws)
        assert message in str(error.value) and "\n" not in str(error.value)
    assert (asg_names(daws), groups(kaws)["hello-web-v001"]["weight"]) == before


def test_ami_of_another_account_is_not_available(kaws, daws, deployed):
    build_image = make_image(kaws, "1.2.0")  # in the build account, never promoted
    with pytest.raises(KilnError, match=f"AMI {build_image} is not available in account prod"):
        operations.canary(kaws, 10, ami=build_image)


def test_canary_needs_a_baseline(kaws, daws, outputs):
    make_image(daws, "1.0.0")
    with pytest.raises(KilnError, match="no baseline for a canary: cluster hello-web"):
        operations.canary(kaws, 10, version="1.0.0")
    assert asg_names(daws) == []


def test_alarm_error_is_what_the_watch_raises(kaws, daws, deployed):
    from orchestrator import health

    env = environment.load(kaws)
    admin_of(daws).client("cloudwatch").set_alarm_state(
        AlarmName=env.alarm_names[1], StateValue="ALARM", StateReason="slow")
    with pytest.raises(AlarmFired, match=env.alarm_names[1]):
        health.watch(env, 5, ["hello-web-v001"])


def test_dry_run_plans_and_changes_nothing(kaws, daws, deployed):
    calls = threading.local()
    calls.before = asg_names(daws)
    result = operations.canary(kaws, 10, version="1.1.0", dry_run=True)
    assert result["result"] == "dry-run"
    texts = [s["text"] for s in result["plan"]["steps"]]
    assert texts[0].startswith("create hello-web-v002: 1.1.0")
    assert "capacity 1" in texts[0]
    assert "listener: hello-web-v001 90%, hello-web-v002 10%" in texts
    assert asg_names(daws) == calls.before
    mutating = [op for op in result["api_calls_by_operation"]
                if not op.split(":")[1].startswith(("Describe", "Get", "List"))]
    assert mutating == []
