"""A task whose AWS endpoint stops answering mid-run (the sandbox's server killed, a network
gone) ends with one `kiln:` line naming the endpoint and what to run, not a traceback."""

from __future__ import annotations

import pytest
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError
from invoke import Context
from invoke.exceptions import Exit
from tenacity import Retrying, stop_after_attempt

from cloud.errors import lost_line
from cloud.tasking import kiln_task

SANDBOX = "http://127.0.0.1:45999/"


def test_a_lost_sandbox_names_its_endpoint_and_sandbox_up():
    line = lost_line(EndpointConnectionError(endpoint_url=SANDBOX))
    assert line.startswith(f"{SANDBOX} stopped answering (EndpointConnectionError)")
    assert "invoke sandbox.up" in line and "invoke bootstrap" in line


def test_a_lost_aws_endpoint_says_nothing_of_the_sandbox():
    line = lost_line(ConnectionClosedError(endpoint_url="https://ec2.eu-west-1.amazonaws.com/"))
    assert line.startswith("https://ec2.eu-west-1.amazonaws.com/ stopped answering")
    assert "sandbox" not in line


def test_a_retry_loops_last_error_is_read_through():
    def call():
        raise EndpointConnectionError(endpoint_url=SANDBOX)

    with pytest.raises(Exception) as raised:
        Retrying(stop=stop_after_attempt(2), reraise=False)(call)
    assert lost_line(raised.value).startswith(SANDBOX)
    assert lost_line(ValueError("other")) is None


def test_a_task_ends_on_one_line_and_status_1():
    @kiln_task
    def deploy(ctx):
        """A task whose AWS went away."""
        raise EndpointConnectionError(endpoint_url=SANDBOX)

    with pytest.raises(Exit) as raised:
        deploy(Context())
    assert raised.value.code == 1
    assert str(raised.value.message).startswith(f"kiln: {SANDBOX} stopped answering")
    assert "\n" not in str(raised.value.message)
