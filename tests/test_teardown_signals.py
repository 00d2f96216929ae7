"""A signal that arrives while the bake releases its temporary resources skips none of them.

The signal is raised for real (signal.raise_signal, handled by the bake's own handler) at the
point where one release has ended and the next has not begun: between two `with` exits.
"""

from __future__ import annotations

import signal
import time

import pytest

from cloud import tags as kiln_tags
from provisioner import resources, signals


def exists(ec2, key_name: str, group_id: str) -> dict[str, bool]:
    return {"key pair": bool(ec2.describe_key_pairs(Filters=[
                {"Name": "key-name", "Values": [key_name]}])["KeyPairs"]),
            "security group": bool(ec2.describe_security_groups(Filters=[
                {"Name": "group-id", "Values": [group_id]}])["SecurityGroups"])}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("ending", ["completed", "failed"])
def test_a_signal_between_two_releases_skips_neither(aws, monkeypatch, signum, ending):
    ec2 = aws.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    name = f"kiln-teardown-{time.time_ns()}"
    tags = kiln_tags.kiln_tags("hello-web", "bake-key", run_id=name, version="1.0.0")
    real_release, released = resources._release, []

    def signalled_release(what, action, *args, **kwargs):
        released.append(what)
        if len(released) == 2:  # the group is released, the key pair not yet
            signal.raise_signal(signum)
        return real_release(what, action, *args, **kwargs)

    monkeypatch.setattr(resources, "_release", signalled_release)
    made = {}
    with pytest.raises(signals.Interrupted), signals.interruptible():
        try:
            with resources.key_pair(aws, name, tags) as key, \
                    resources.security_group(aws, name, vpc["VpcId"], ["127.0.0.1/32"], 22,
                                             tags) as group:
                made.update(key=key.name, group=group)
                if ending == "failed":
                    raise RuntimeError("provisioning failed")
        except RuntimeError:
            pass
        signals.check()  # the bake's next step: the signal that waited is raised now
    assert released == [f"security group {made['group']}", f"key pair {made['key']}"]
    assert exists(ec2, made["key"], made["group"]) == {"key pair": False,
                                                       "security group": False}
