"""An environment stack update that touches the listener (its SSL policy, certificate, port)
keeps the traffic Kiln routes: CloudFormation sets every property of a resource it updates, the
default action included, as the sandbox's CloudFormation does (moto's listener update is a
ModifyListener with the template's properties)."""

from __future__ import annotations

from accounts import bootstrap
from cloud.target import connect
from orchestrator import operations
from orchestrator import stack as env_stack_module
from tests.conftest import deep_merge
from tests.deploy_helpers import make_image

POLICY = "ELBSecurityPolicy-TLS13-1-2-Res-2021-06"


def default_action(daws, listener: str) -> list[dict]:
    found = daws.client("elbv2").describe_listeners(ListenerArns=[listener])["Listeners"][0]
    return found["DefaultActions"], found["SslPolicy"]


def forwarded(actions: list[dict]) -> dict[str, int]:
    (action,) = actions
    assert action["Type"] == "forward", action
    return {tg["TargetGroupArn"]: tg["Weight"] for tg in action["ForwardConfig"]["TargetGroups"]}


def test_a_listener_update_keeps_the_weights_kiln_set(kaws, daws, kiln_settings,
                                                      deploy_overrides):
    admin = connect(kaws.settings, admin=True)
    bootstrap.run(admin.settings, admin, yes=True, parts=(env_stack_module.ENV_STACK.part,))
    make_image(daws, "1.0.0")
    assert operations.deploy(kaws, version="1.0.0")["result"] == "ok"
    listener = operations.status(kaws)["listener"]
    before, _policy = default_action(daws, listener)
    assert list(forwarded(before).values()) == [100]
    settings = kiln_settings(**deep_merge(deploy_overrides,
                                          {"deploy": {"listener": {"ssl_policy": POLICY}}}))
    admin = connect(settings, admin=True)
    results = bootstrap.run(admin.settings, admin, yes=True,
                            parts=(env_stack_module.ENV_STACK.part,))
    assert [r["action"] for r in results] == ["updated"]
    assert "Listener" in {c["logical_id"] for c in results[0]["changes"]}
    after, policy = default_action(daws, listener)
    assert policy == POLICY
    assert forwarded(after) == forwarded(before)
    again = bootstrap.run(admin.settings, admin, yes=True,
                          parts=(env_stack_module.ENV_STACK.part,))
    assert [r["action"] for r in again] == ["up-to-date"]
