"""The release history (cloud/history.py): every deploy, canary, promote, rollback and teardown
records who (the operator's ARN), when, from and to which release, why and the outcome, in the
build account's history table; `invoke history` reads it, also after a teardown. Role sessions
in the deploy account are named after the operator, with the operator as source identity."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from accounts import bootstrap
from cloud import history
from cloud.target import connect
from orchestrator import operations
from tests.conftest import deep_merge
from tests.deploy_helpers import FAST, NO_TRAFFIC, make_image

QUICK = deep_merge(deep_merge(FAST, NO_TRAFFIC), {"deploy": {"steps": "100"}})
OPERATOR = "arn:aws:iam::123456789012:user/kiln-operator"


@pytest.fixture
def deploy_overrides():
    return QUICK


@pytest.fixture
def ledger(kaws, kiln_settings):
    """The build stack (with the history table) beside prod's, as `invoke bootstrap` makes."""
    admin = connect(kiln_settings(), admin=True)
    bootstrap.run(admin.settings, admin, yes=True, parts=("build",))
    return history.table(kaws)


def events(run_invoke, *flags) -> list[dict]:
    done = run_invoke("history", "--json", *flags, overrides=QUICK, check=True)
    return json.loads(done.stdout)["events"]


def test_every_operation_is_recorded_and_the_record_outlives_teardown(
        kaws, daws, outputs, ledger, run_invoke):
    for version in ("1.0.0", "1.1.0"):
        make_image(daws, version)
    operations.deploy(kaws, version="1.0.0", reason="first release")
    operations.canary(kaws, 10, version="1.1.0", watch="0")
    operations.promote(kaws, reason="canary looked fine")
    operations.rollback(kaws, reason="ticket 42: slow checkout")
    operations.teardown(kaws, keep=0)
    found = [e for e in events(run_invoke, "--app", "hello-web") if e["outcome"] != "started"]
    assert [(e["event"], e.get("from_release"), e.get("to_release"), e["outcome"],
             e.get("reason")) for e in reversed(found)] == [
        ("deploy", None, "1.0.0", "ok", "first release"),
        ("canary", "1.0.0", "1.1.0", "ok", None),
        ("promote", "1.0.0", "1.1.0", "ok", "canary looked fine"),
        ("rollback", "1.1.0", "1.0.0", "ok", "ticket 42: slow checkout"),
        ("teardown", "1.0.0", None, "ok", None)]
    assert {e["who"] for e in found} == {OPERATOR}
    assert {e["operator"] for e in found} == {"kiln-operator"}
    assert found[0]["detail"]["deleted"] == ["hello-web-v002"]
    assert all(e["cluster"] == "hello-web" and e["account"] == "prod" for e in found)
    # Each run has its start recorded before it acted, and its end.
    runs = {}
    for e in events(run_invoke):
        runs.setdefault(e["run_id"], []).append(e["outcome"])
    assert all(sorted(outcomes)[-1] == "started" and len(outcomes) == 2
               for outcomes in runs.values()), runs
    table = run_invoke("history", overrides=QUICK, check=True).stdout.splitlines()
    assert table[0].split() == ["WHEN", "CLUSTER", "EVENT", "FROM", "TO", "OUTCOME", "WHO",
                                "REASON"]
    assert table[2].split()[3:7] == ["rollback", "1.1.0", "1.0.0", "ok"], table
    assert table[2].endswith("kiln-operator  ticket 42: slow checkout"), table


def test_a_gate_rollback_is_recorded_with_its_judgement(kaws, daws, outputs, ledger, run_invoke):
    for version in ("1.0.0", "1.1.0"):
        make_image(daws, version)
    operations.deploy(kaws, version="1.0.0")
    with pytest.raises(operations.RolledBack):
        operations.canary(kaws, 10, version="1.1.0", watch="1s", reason="try 1.1.0")
    newest = events(run_invoke, "--app", "hello-web", "--limit", "1")[0]
    assert (newest["event"], newest["outcome"], newest["reason"]) == (
        "canary", "rolled back", "try 1.1.0")
    assert "no verdict" in newest["error"]
    assert newest["detail"]["judgement"]["verdict"] == "waiting"


def test_operators_may_add_events_but_never_change_or_delete_them(kaws, ledger):
    db = kaws.client("dynamodb")
    key = {"Subject": {"S": "app/hello-web"}, "At": {"S": "2026-01-01T00:00:00.000000Z#x"}}
    db.put_item(TableName=ledger, Item={**key, "event": {"S": "note"}})
    for call in (lambda: db.delete_item(TableName=ledger, Key=key),
                 lambda: db.update_item(TableName=ledger, Key=key,
                                        UpdateExpression="SET outcome = :o",
                                        ExpressionAttributeValues={":o": {"S": "ok"}})):
        with pytest.raises(ClientError) as denied:
            call()
        assert denied.value.response["Error"]["Code"] == "AccessDeniedException"


def test_role_sessions_are_named_after_the_operator(daws):
    arn = daws.client("sts").get_caller_identity()["Arn"]
    assert arn == "arn:aws:sts::222222222222:assumed-role/kiln-deployer/kiln-operator"


def test_without_a_history_table_an_operation_says_it_was_not_recorded(
        kaws, daws, outputs, run_invoke):
    make_image(daws, "1.0.0")
    done = run_invoke("deploy", "--version", "1.0.0", overrides=QUICK, check=True)
    assert "history: not recorded (no history table: stack kiln-build in account build has no " \
           "HistoryTableName output (`invoke bootstrap` adds it))" in done.stderr
