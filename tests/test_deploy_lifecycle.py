"""Teardown, disable behaviour, self-service environments and the deploy tasks' command line."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from cloud import sweepers
from cloud.target import connect
from orchestrator import groups as server_groups
from orchestrator import operations, selfservice, sweeper
from provisioner import janitor
from tests.conftest import deep_merge
from tests.deploy_helpers import FAST, deployer, env_stack, make_image

QUICK = deep_merge(FAST, {"deploy": {"steps": "100"}})


@pytest.fixture
def deploy_overrides():
    return QUICK


def groups(kaws):
    return {g["name"]: g for g in operations.status(kaws)["server_groups"]}


def test_teardown_keeps_the_most_recent_disabled_groups(kaws, daws, outputs):
    for version in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        make_image(daws, version)
        operations.deploy(kaws, version=version)
    states = {n: g["state"] for n, g in groups(kaws).items()}
    assert states == {"hello-web-v001": "disabled", "hello-web-v002": "disabled",
                      "hello-web-v003": "disabled", "hello-web-v004": "active"}
    planned = operations.teardown(kaws, keep=2, dry_run=True)
    assert [s["text"] for s in planned["plan"]["steps"] if s["action"] == "delete"] == [
        "delete hello-web-v001 with its launch template and target group"]
    assert len(groups(kaws)) == 4
    operations.teardown(kaws, keep=2)
    assert sorted(groups(kaws)) == ["hello-web-v002", "hello-web-v003", "hello-web-v004"]
    names = [t["LaunchTemplateName"] for t in
             daws.client("ec2").describe_launch_templates()["LaunchTemplates"]]
    assert "hello-web-v001" not in names
    tgs = [t["TargetGroupName"] for t in
           daws.client("elbv2").describe_target_groups()["TargetGroups"]]
    assert "hello-web-v001" not in tgs and "hello-web-v004" in tgs
    operations.teardown(kaws, keep=0)  # v003 stays: v004 replaced it, a rollback returns there
    assert sorted(groups(kaws)) == ["hello-web-v003", "hello-web-v004"]
    assert groups(kaws)["hello-web-v004"]["weight"] == 100


def test_scale_down_disable_is_scheduled_and_rollback_cancels_it(clean_sandbox, kiln_settings):
    settings = kiln_settings(**deep_merge(QUICK, {"deploy": {"disable": {
        "mode": "scale_down", "delay": "1h"}}}))
    daws = deployer(settings)
    kaws = connect(settings)
    env_stack(daws)
    make_image(daws, "1.0.0")
    make_image(daws, "1.1.0")
    operations.deploy(kaws, version="1.0.0")
    operations.deploy(kaws, version="1.1.0")
    from orchestrator import environment

    env = environment.load(kaws)
    action = server_groups.scheduled_scale_down(env, "hello-web-v001")
    assert action["DesiredCapacity"] == 0
    assert action["StartTime"] > datetime.now(UTC) + timedelta(minutes=50)
    operations.rollback(kaws)
    assert server_groups.scheduled_scale_down(env, "hello-web-v001") is None
    assert server_groups.scheduled_scale_down(env, "hello-web-v002") is not None
    final = groups(kaws)
    assert (final["hello-web-v001"]["weight"], final["hello-web-v001"]["healthy"]) == (100, 2)


def test_self_service_environment_up_down_and_expiry(kaws, daws, outputs):
    make_image(daws, "1.0.0")
    operations.deploy(kaws, version="1.0.0")
    result = selfservice.up(kaws, "alice", ttl="2h")
    assert (result["server_group"], result["version"], result["capacity"]) == (
        "hello-web-alice-v001", "1.0.0", 1)
    asg = daws.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=["hello-web-alice-v001"])["AutoScalingGroups"][0]
    tags = {t["Key"]: t["Value"] for t in asg["Tags"]}
    assert tags["kiln:owner"] == "alice" and tags["kiln:expires-at"] > "2025"
    rules = daws.client("elbv2").describe_rules(ListenerArn=outputs["ListenerArn"])["Rules"]
    header = [r for r in rules if not r["IsDefault"]][0]["Conditions"][0]
    assert header["HttpHeaderConfig"] == {"HttpHeaderName": "X-Kiln-Env", "Values": ["alice"]}
    assert list(groups(kaws)) == ["hello-web-v001"]  # not part of the app's cluster
    with pytest.raises(Exception, match="alice already has an environment"):
        selfservice.up(kaws, "alice")
    selfservice.up(kaws, "bob", ttl="1h")
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    daws.client("autoscaling").create_or_update_tags(Tags=[{
        "ResourceId": "hello-web-bob-v001", "ResourceType": "auto-scaling-group",
        "Key": "kiln:expires-at", "Value": past, "PropagateAtLaunch": True}])
    assert sweeper.SWEEPER in sweepers.SWEEPERS
    swept = janitor.run(kaws)
    assert [x["id"] for x in swept["leftovers"] if x["kind"] == "self-service-env"] == [
        "hello-web-bob-v001"]
    remaining = [g["AutoScalingGroupName"] for g in daws.client(
        "autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]]
    assert sorted(remaining) == ["hello-web-alice-v001", "hello-web-v001"]
    selfservice.down(kaws, "alice")
    rules = daws.client("elbv2").describe_rules(ListenerArn=outputs["ListenerArn"])["Rules"]
    assert [r for r in rules if not r["IsDefault"]] == []


def test_command_line(run_invoke, clean_sandbox, kiln_settings):
    daws = deployer(kiln_settings())
    env_stack(daws)
    make_image(daws, "1.0.0")
    make_image(daws, "1.1.0")
    run_invoke("deploy", "--version", "1.0.0", overrides=QUICK, check=True)
    bad = run_invoke("canary", "--percent", "150", "--version", "1.1.0", overrides=QUICK)
    assert bad.returncode == 4  # refused
    assert bad.stderr.strip().splitlines()[-1] == (
        "kiln: --percent: 150 is outside 1–99 (a canary shares traffic with its baseline; use "
        "promote for 100)")
    dry = run_invoke("canary", "--percent", "10", "--version", "1.1.0", "--dry-run", "--json",
                     overrides=QUICK, check=True)
    assert json.loads(dry.stdout)["result"] == "dry-run"
    assert "dry run: nothing changed" in dry.stderr
    done = run_invoke("canary", "--percent", "10", "--version", "1.1.0", "--watch", "0",
                      "--json", overrides=QUICK, check=True)
    result = json.loads(done.stdout)
    assert result["api_calls"] == sum(result["api_calls_by_operation"].values()) > 0
    status = run_invoke("status", "--json", overrides=QUICK, check=True)
    weights = {g["name"]: g["weight"] for g in json.loads(status.stdout)["server_groups"]}
    assert weights == {"hello-web-v001": 90, "hello-web-v002": 10}
    table = run_invoke("status", overrides=QUICK, check=True).stdout
    assert "hello-web-v002  1.1.0" in table and "canary" in table
