"""A create call whose answer is lost after AWS applied it (botocore then retries): the bake
adopts or remakes what the first attempt made, and releases it; no Duplicate error, no leak.
RunInstances carries the run id as its ClientToken (AWS's own idempotency)."""

from __future__ import annotations

import time

import pytest

from cloud import tags as kiln_tags
from cloud.target import connect
from provisioner import resources
from tests.bake_helpers import proxied
from tests.faults import FaultProxy


@pytest.fixture
def lossy(sandbox_box, kiln_settings, monkeypatch):
    with FaultProxy(sandbox_box.endpoint) as proxy:
        overrides, env = proxied(sandbox_box, proxy.url)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        through_proxy = connect(kiln_settings(**overrides))
        through_proxy.client("ec2")  # made now, while AWS_ENDPOINT_URL names the proxy
        yield proxy, through_proxy


def test_lost_answers_to_create_key_pair_and_security_group(aws, lossy):
    proxy, through_proxy = lossy
    ec2 = aws.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    run_id = f"retry-{time.time_ns()}"
    tags = kiln_tags.kiln_tags("hello-web", "bake-key", run_id=run_id, version="1.0.0")
    name = f"kiln-hello-web-{run_id}"
    proxy.lose("CreateKeyPair")
    proxy.lose("CreateSecurityGroup")
    with resources.key_pair(through_proxy, name, tags) as key, \
            resources.security_group(through_proxy, name, vpc["VpcId"], ["127.0.0.1/32"], 22,
                                     tags) as group:
        assert proxy.lost == ["CreateKeyPair", "CreateSecurityGroup"], proxy.actions
        assert "PRIVATE KEY" in key.private_key
        (listed,) = ec2.describe_key_pairs(KeyNames=[name])["KeyPairs"]
        assert listed["KeyPairId"] == key.id  # the key pair whose private key we hold
        assert [g["GroupId"] for g in ec2.describe_security_groups(Filters=[
            {"Name": "group-name", "Values": [name]}])["SecurityGroups"]] == [group]
    assert not ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [name]}])[
        "KeyPairs"]
    assert not ec2.describe_security_groups(Filters=[
        {"Name": "group-name", "Values": [name]}])["SecurityGroups"]
