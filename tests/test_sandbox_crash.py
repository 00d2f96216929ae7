"""A sandbox whose server died (kill -9, a reboot) is brought up again honestly: its machines
are ended first, and `sandbox.up` says in one line that the state is gone and what to run."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import boto3

from sandbox.control import Sandbox
from sandbox.daemon import wait_gone
from sandbox.machines import instances as machines
from tests.test_sandbox_instances import base_image, ssh_group


def test_up_after_a_killed_server_ends_its_machines_and_says_what_was_lost(tmp_path, capsys):
    box = Sandbox(tmp_path / "state")
    try:
        box.up()
        admin = box.credentials("admin")
        ec2 = boto3.client("ec2", endpoint_url=box.endpoint, region_name="us-east-1",
                           aws_access_key_id=admin["AWS_ACCESS_KEY_ID"],
                           aws_secret_access_key=admin["AWS_SECRET_ACCESS_KEY"])
        ec2.create_key_pair(KeyName="k", TagSpecifications=[
            {"ResourceType": "key-pair", "Tags": [{"Key": "kiln:role", "Value": "bake-key"}]}])
        instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1,
                                     KeyName="k", SecurityGroupIds=[ssh_group(ec2)])[
            "Instances"][0]["InstanceId"]
        init = machines.init_pid(box.state_dir, instance)
        assert init and Path(f"/proc/{init}").exists()
        server = box.moto.pid
        os.kill(server, signal.SIGKILL)
        wait_gone(server)
        assert Path(f"/proc/{init}").exists()  # a dead server's machines live on …
        capsys.readouterr()
        box.up()
        said = capsys.readouterr().err
        assert not machines.running(box.state_dir, instance)  # … until the next up
        assert not Path(f"/proc/{init}").exists() or _zombie(init)
        lines = [line for line in said.splitlines() if "had stopped without" in line]
        assert len(lines) == 1 and f"(pid {server})" in lines[0]
        assert "invoke bootstrap" in lines[0]
        box.down()
        box.up()  # after a clean stop: nothing to say
        assert "had stopped without" not in capsys.readouterr().err
    finally:
        box.down()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
