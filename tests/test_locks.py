import subprocess
import sys
import time

import pytest

from cloud import locks
from tests.conftest import ROOT


@pytest.fixture
def table(admin_aws):
    name = f"kiln-locks-test-{time.time_ns()}"
    admin_aws.client("dynamodb").create_table(
        TableName=name, KeySchema=[{"AttributeName": "LockKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST")
    return name


def plant(admin_aws, table, key, owner, expires_at):
    """The record a holder on another host left when it died: nobody renews it any more."""
    admin_aws.client("dynamodb").put_item(TableName=table, Item={
        "LockKey": {"S": key}, "Owner": {"S": owner}, "Token": {"S": "dead"},
        "Since": {"S": "2026-01-01T00:00:00Z"}, "ExpiresAt": {"N": str(expires_at)},
        "Host": {"S": "elsewhere"}, "Pid": {"N": "1"}})


def test_second_holder_is_refused_with_who_and_since(admin_aws, table):
    with locks.lease(admin_aws, table, "cluster/hello-web", "alice@ci pid 1"):
        with pytest.raises(locks.LockHeld) as error:
            with locks.lease(admin_aws, table, "cluster/hello-web", "bob@laptop pid 2"):
                pass
    assert "locked by alice@ci pid 1 since 20" in str(error.value)
    assert "lease live" in str(error.value)
    with locks.lease(admin_aws, table, "cluster/hello-web", "bob@laptop pid 2"):
        assert locks.holder(admin_aws, table, "cluster/hello-web")["owner"] == "bob@laptop pid 2"
    assert locks.holder(admin_aws, table, "cluster/hello-web") is None


def test_expired_lease_of_a_dead_holder_is_taken_over(admin_aws, table):
    plant(admin_aws, table, "k", "crashed run", expires_at=int(time.time()) - 1)
    with locks.lease(admin_aws, table, "k", "next run") as held:
        held.renew()
        assert locks.holder(admin_aws, table, "k")["owner"] == "next run"
    assert locks.holder(admin_aws, table, "k") is None


def test_heartbeat_keeps_a_short_lease_of_a_live_holder(admin_aws, table):
    with locks.lease(admin_aws, table, "k", "alive", ttl_seconds=1):
        time.sleep(2.5)  # more than two leases long
        with pytest.raises(locks.LockHeld, match="lease live, renewed by its holder"):
            with locks.lease(admin_aws, table, "k", "next run"):
                pass
        assert locks.holder(admin_aws, table, "k")["owner"] == "alive"


def test_killed_holder_on_this_host_is_known_dead_at_once(admin_aws, table, tmp_path):
    script = (
        "import sys, time\n"
        "from cloud import settings, target, locks\n"
        "from tests.conftest import project_config, deep_merge\n"
        "raw = deep_merge(project_config(), {'sandbox': {'state_dir': sys.argv[2]}})\n"
        "admin_aws = target.connect(settings.validate(raw, ['test']))\n"
        "with locks.lease(admin_aws, sys.argv[1], 'k', 'doomed', ttl_seconds=600):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n")
    state_dir = admin_aws.settings.sandbox.state_dir
    doomed = subprocess.Popen([sys.executable, "-c", script, table, str(state_dir)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert doomed.stdout.readline().strip() == "held"
        with pytest.raises(locks.LockHeld, match="locked by doomed"):
            with locks.lease(admin_aws, table, "k", "too early"):
                pass
    finally:
        doomed.kill()
        doomed.wait()
    started = time.monotonic()
    with locks.lease(admin_aws, table, "k", "next run"):
        assert locks.holder(admin_aws, table, "k")["owner"] == "next run"
    assert time.monotonic() - started < 5


def test_force_takes_over_a_live_lease_and_the_old_holder_learns_it(admin_aws, table):
    first = locks.lease(admin_aws, table, "k", "hung elsewhere", ttl_seconds=60)
    old = first.__enter__()
    with pytest.raises(locks.LockHeld, match=r"--force-unlock takes it over"):
        with locks.lease(admin_aws, table, "k", "operator", force_option="--force-unlock"):
            pass
    with locks.lease(admin_aws, table, "k", "operator", force=True):
        with pytest.raises(locks.LockHeld, match="was taken over"):
            old.renew()
        first.__exit__(None, None, None)  # the old holder's release leaves the new lease alone
        assert locks.holder(admin_aws, table, "k")["owner"] == "operator"


def test_waiting_acquires_once_released(admin_aws, table):
    import threading

    first = locks.lease(admin_aws, table, "repo", "first", ttl_seconds=60)
    first.__enter__()
    threading.Timer(0.5, lambda: first.__exit__(None, None, None)).start()
    with locks.lease(admin_aws, table, "repo", "second", wait_seconds=10):
        assert locks.holder(admin_aws, table, "repo")["owner"] == "second"


def test_the_cluster_lock_is_taken_in_the_deploy_region(admin_aws):
    """The lock table lives in the environment stack, in kiln.deploy.region, which need not be
    kiln.aws.region."""
    from orchestrator.environment import Environment
    from orchestrator.operations import cluster_lock

    west = "us-west-2"
    assert admin_aws.region != west
    name = f"kiln-locks-west-{time.time_ns()}"
    admin_aws.client("dynamodb", west).create_table(
        TableName=name, KeySchema=[{"AttributeName": "LockKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST")
    env = Environment(aws=admin_aws, region=west, app="hello-web", cluster="hello-web",
                      stack_name="kiln-env-hello-web", vpc_id="", subnet_ids=[],
                      security_group_id="", listener_arn="", instance_profile_arn="",
                      instance_port=8080, lock_table=name)
    with cluster_lock(env, "deploy", "run-1", False, None):
        held = locks.holder(admin_aws, name, "cluster/hello-web", region=west)
        assert held["owner"].startswith("deploy by ")
    assert locks.holder(admin_aws, name, "cluster/hello-web", region=west) is None
