"""The sandbox keeps its AWS across a killed server and a restart (sandbox/aws/persistence.py):
`sandbox.up` after a crash ends the dead server's machines first, then the new server restores
the last snapshot, and says in one line what came back and what did not."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import boto3
import pytest

from accounts import bootstrap, verify
from cloud.target import connect
from packager import repo
from sandbox.control import Sandbox
from sandbox.daemon import wait_gone
from sandbox.machines import images
from sandbox.machines import instances as machines
from tests import layer_helpers
from tests.repo_helpers import build_rpm
from tests.test_sandbox_instances import base_image, ssh_group

PARTS = ("build", "prod", "keys")


def _client(box: Sandbox, service: str):
    admin = box.credentials("admin")
    return boto3.client(service, endpoint_url=box.endpoint, region_name="us-east-1",
                        aws_access_key_id=admin["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=admin["AWS_SECRET_ACCESS_KEY"])


def _kill(box: Sandbox) -> int:
    server = box.moto.pid
    os.kill(server, signal.SIGKILL)
    wait_gone(server)
    return server


@pytest.fixture
def own_box(tmp_path):
    """A sandbox of the test's own (it is killed), the process's AWS settings kept."""
    saved = dict(os.environ)
    box = Sandbox(tmp_path / "state")
    try:
        yield box
    finally:
        box.down()
        os.environ.clear()
        os.environ.update(saved)


def test_up_after_a_killed_server_ends_its_machines_and_restores_the_rest(own_box, capsys):
    box = own_box
    box.state_dir.mkdir(mode=0o755)  # made beforehand with the usual umask
    box.up()
    # The state dir is its owner's alone: its logs record requests and sessions.
    assert stat.S_IMODE(os.stat(box.state_dir).st_mode) == 0o700
    ec2, s3 = _client(box, "ec2"), _client(box, "s3")
    ec2.create_key_pair(KeyName="k", TagSpecifications=[
        {"ResourceType": "key-pair", "Tags": [{"Key": "kiln:role", "Value": "bake-key"}]}])
    instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1,
                                 KeyName="k", SecurityGroupIds=[ssh_group(ec2)])[
        "Instances"][0]["InstanceId"]
    s3.create_bucket(Bucket="kept-bucket")
    s3.put_object(Bucket="kept-bucket", Key="a", Body=b"kept")
    key = _client(box, "kms").create_key()["KeyMetadata"]["KeyId"]
    sealed = _client(box, "kms").encrypt(KeyId=key, Plaintext=b"secret")["CiphertextBlob"]
    _client(box, "ssm").put_parameter(Name="/kept", Value="v", Type="String")
    init = machines.init_pid(box.state_dir, instance)
    assert init and Path(f"/proc/{init}").exists()
    image = ec2.create_image(InstanceId=instance, Name="kept-image")["ImageId"]
    _wait_saved(box)
    endpoint = box.endpoint
    server = _kill(box)
    assert Path(f"/proc/{init}").exists()  # a dead server's machines live on …
    capsys.readouterr()
    box.up()
    said = capsys.readouterr().err
    assert not machines.running(box.state_dir, instance)  # … until the next up
    assert not Path(f"/proc/{init}").exists() or _zombie(init)
    lines = [line for line in said.splitlines() if "had stopped without" in line]
    assert len(lines) == 1 and f"(pid {server})" in lines[0] and "restored" in lines[0]
    assert "1 instances whose machines ended" in lines[0]
    assert box.endpoint == endpoint  # the port its state names (a repository's URL) answers
    # What the snapshot held is back, under the new start's keys.
    ec2, s3 = _client(box, "ec2"), _client(box, "s3")
    assert s3.get_object(Bucket="kept-bucket", Key="a")["Body"].read() == b"kept"
    assert _client(box, "kms").decrypt(CiphertextBlob=sealed)["Plaintext"] == b"secret"
    assert _client(box, "ssm").get_parameter(Name="/kept")["Parameter"]["Value"] == "v"
    assert ec2.describe_key_pairs(KeyNames=["k"])["KeyPairs"]
    found = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    assert found["State"]["Name"] == "stopped"  # its machine is gone: as a failed host leaves it
    assert found["StateReason"]["Code"] == "Server.InternalError"
    # The new server's namespace froze the layers again: the base's and the image's.
    [layer] = images.stack(box.state_dir, image)
    assert layer in layer_helpers.layers(box.state_dir)
    assert layer_helpers.not_frozen(box.moto.pid, box.state_dir) == []
    box.down()
    box.up()  # after a clean stop: what was restored, and no crash
    said = capsys.readouterr().err
    assert "had stopped without" not in said and "sandbox: restored" in said
    assert _client(box, "s3").get_object(Bucket="kept-bucket", Key="a")["Body"].read() == b"kept"


def test_a_bootstrapped_sandbox_with_a_published_package_survives_kill_9(own_box, kiln_settings,
                                                                         tmp_path):
    settings = kiln_settings(sandbox={"state_dir": str(own_box.state_dir)})
    admin = connect(settings, admin=True)
    bootstrap.run(admin.settings, admin, yes=True, parts=PARTS)
    rpm = build_rpm(tmp_path / "rpms", "survivor", "1.0.0")
    repo.publish(connect(kiln_settings(sandbox={"state_dir": str(own_box.state_dir)})), rpm)
    _wait_saved(own_box)
    _kill(own_box)
    aws = connect(kiln_settings(sandbox={"state_dir": str(own_box.state_dir)}))  # up again
    assert [p["name"] for p in repo.list_packages(aws)] == ["survivor"]
    admin = connect(kiln_settings(sandbox={"state_dir": str(own_box.state_dir)}), admin=True)
    assert [p for check in verify.run(admin.settings, admin, None, PARTS)
            for p in check.problems] == []


def _wait_saved(box: Sandbox, timeout: float = 15) -> None:
    """Until the server has written a snapshot since the last change (it writes one after half
    a second without changes) and written none since for longer than that; at most `timeout`
    (a server that writes none fails the test's own checks)."""
    path = box.state_dir / "aws-state.pickle"
    since, last = time.time(), None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stamp = path.stat().st_mtime if path.exists() else 0
        if stamp > since and stamp == last:
            return
        last = stamp
        time.sleep(1.2)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_pipeline_stack_is_kept_across_a_restart(own_box):
    """A stack holding a pipeline and a build project (the sandbox's own CloudFormation models)
    is in the snapshot: CloudFormation was left out of it whole when such a stack existed."""
    from sandbox.aws import persistence
    from tests.test_sandbox_codepipeline import template

    box = own_box
    box.up()
    cfn = _client(box, "cloudformation")
    cfn.create_stack(StackName="kept-pipeline", TemplateBody=template("true"),
                     Capabilities=["CAPABILITY_IAM"])
    box.down()
    box.up()
    assert "cloudformation" not in persistence.read_report(box.state_dir).get("left_out", {})
    cfn = _client(box, "cloudformation")
    assert cfn.describe_stacks(StackName="kept-pipeline")["Stacks"][0]["StackStatus"] == \
        "CREATE_COMPLETE"
    assert _client(box, "codebuild").list_projects()["projects"]
