"""A release its gate rolled back is not rolled out again by mistake: `deploy` and `canary` of a
release tagged failed in the cluster (its groups' kiln:state, and the release history, which
outlives teardown) are refused, naming the failures, unless `--allow-failed`, which is
recorded. A dry run says so above its plan."""

from __future__ import annotations

import json

import pytest

from accounts import bootstrap
from cloud.errors import EXIT_REFUSED
from cloud.target import connect
from orchestrator import operations
from tests.conftest import deep_merge
from tests.deploy_helpers import FAST, NO_TRAFFIC, make_image

QUICK = deep_merge(deep_merge(FAST, NO_TRAFFIC), {"deploy": {"steps": "100"}})


@pytest.fixture
def deploy_overrides():
    return QUICK


def test_a_release_that_failed_is_refused_unless_allowed(kaws, daws, outputs, kiln_settings,
                                                         run_invoke):
    admin = connect(kiln_settings(), admin=True)
    bootstrap.run(admin.settings, admin, yes=True, parts=("build",))
    for version in ("1.0.0", "1.1.0"):
        make_image(daws, version, release="1")
    operations.deploy(kaws, version="1.0.0")
    # Nothing sends the canary requests: its watch ends without a verdict, and fails.
    with pytest.raises(operations.RolledBack):
        operations.canary(kaws, 10, version="1.1.0", watch="2s")
    with pytest.raises(operations.RolledBack):
        operations.canary(kaws, 10, version="1.1.0", watch="2s", allow_failed=True)
    run_invoke("teardown", "--keep", "0", overrides=QUICK, check=True)
    assert [g["name"] for g in operations.status(kaws)["server_groups"]] == ["hello-web-v001"]

    refused = run_invoke("deploy", "--version", "1.1.0", overrides=QUICK)
    assert refused.returncode == EXIT_REFUSED, refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        "kiln: deploy: hello-web 1.1.0-1 failed in cluster hello-web before (hello-web-v002, "
        "hello-web-v003 rolled back by their gate); give --allow-failed to roll it out anyway "
        "(recorded)")
    planned = run_invoke("deploy", "--version", "1.1.0", "--dry-run", overrides=QUICK,
                         check=True)
    assert ("warning: hello-web 1.1.0-1 failed in cluster hello-web before (hello-web-v002, "
            "hello-web-v003 rolled back by their gate); the deploy is refused without "
            "--allow-failed") in planned.stderr.splitlines(), planned.stderr

    run_invoke("deploy", "--version", "1.1.0", "--allow-failed", "--reason", "fixed config",
               overrides=QUICK, check=True)
    serving = operations.status(kaws)["server_groups"]
    assert [(g["release_id"], g["weight"]) for g in serving if g["weight"]] == [("1.1.0-1", 100)]
    events = json.loads(run_invoke("history", "--json", overrides=QUICK,
                                   check=True).stdout)["events"]
    deployed = next(e for e in events if e["event"] == "deploy" and e["outcome"] == "ok"
                    and e["to_release"] == "1.1.0-1")
    assert deployed["detail"]["allowed_failed"] == ["hello-web-v002", "hello-web-v003"]
