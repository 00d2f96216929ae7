"""The listener's forward action never asks for more than 5 target groups (AWS's cap)."""

import pytest

from orchestrator import operations
from tests.conftest import deep_merge
from tests.deploy_helpers import FAST, make_image


@pytest.fixture
def deploy_overrides():
    return deep_merge(FAST, {"deploy": {"steps": "100"}})


def listener(kaws) -> dict[str, int]:
    return {g["name"]: g["weight"] for g in operations.status(kaws)["server_groups"]
            if g["on_listener"]}


def test_canary_of_a_sixth_group_keeps_five_on_the_listener(kaws, daws, outputs):
    for n in range(1, 6):
        make_image(daws, f"1.{n}.0")
        operations.deploy(kaws, version=f"1.{n}.0")
    assert len(listener(kaws)) == 5
    make_image(daws, "1.6.0")
    operations.canary(kaws, version="1.6.0", percent=10)
    weights = listener(kaws)
    assert len(weights) == 5
    assert (weights["hello-web-v005"], weights["hello-web-v006"]) == (90, 10)
    # The oldest idle group leaves; the one a rollback returns to (v004) stays health-checked.
    assert "hello-web-v001" not in weights and weights["hello-web-v004"] == 0
