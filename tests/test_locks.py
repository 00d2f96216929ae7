import time

import pytest

from cloud import locks


@pytest.fixture
def table(aws):
    name = f"kiln-locks-test-{time.time_ns()}"
    aws.client("dynamodb").create_table(
        TableName=name, KeySchema=[{"AttributeName": "LockKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST")
    return name


def test_second_holder_is_refused_with_who_and_since(aws, table):
    with locks.lease(aws, table, "cluster/hello-web", "alice@ci pid 1"):
        with pytest.raises(locks.LockHeld) as error:
            with locks.lease(aws, table, "cluster/hello-web", "bob@laptop pid 2"):
                pass
    assert "locked by alice@ci pid 1 since 20" in str(error.value)
    assert "lease still live" in str(error.value)
    with locks.lease(aws, table, "cluster/hello-web", "bob@laptop pid 2"):
        assert locks.holder(aws, table, "cluster/hello-web")["owner"] == "bob@laptop pid 2"
    assert locks.holder(aws, table, "cluster/hello-web") is None


def test_expired_lease_needs_force_to_take_over(aws, table):
    stale = locks.lease(aws, table, "k", "crashed run", ttl_seconds=-1)
    stale.__enter__()  # never released: the process "died"
    with pytest.raises(locks.LockHeld, match="expired; take it over with --force-unlock"):
        with locks.lease(aws, table, "k", "next run"):
            pass
    with locks.lease(aws, table, "k", "next run", take_expired=True) as held:
        held.renew()
        assert locks.holder(aws, table, "k")["owner"] == "next run"


def test_waiting_acquires_once_released(aws, table):
    import threading

    first = locks.lease(aws, table, "repo", "first", ttl_seconds=60)
    first.__enter__()
    threading.Timer(0.5, lambda: first.__exit__(None, None, None)).start()
    with locks.lease(aws, table, "repo", "second", wait_seconds=10):
        assert locks.holder(aws, table, "repo")["owner"] == "second"
