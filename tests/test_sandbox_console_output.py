"""GetConsoleOutput of a sandbox instance prints the host key its SSH server presents, in
cloud-init's format, as an EC2 instance does at first boot."""

from __future__ import annotations

import socket

import boto3
import paramiko
import pytest
from botocore.exceptions import ClientError

from provisioner import bake
from provisioner.provision import console_fingerprints, fingerprint
from sandbox.sshd import Sshd


def presented_key(port: int) -> paramiko.PKey:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=10)
            return transport.get_remote_server_key()
        finally:
            transport.close()


def test_console_output_prints_the_host_key_ssh_presents(clean_sandbox):
    ec2 = boto3.client("ec2", region_name="us-east-1")
    ec2.create_key_pair(KeyName="console-key", KeyType="ed25519")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                                 KeyName="console-key")["Instances"][0]["InstanceId"]
    output = ec2.get_console_output(InstanceId=instance)["Output"]
    assert "-----BEGIN SSH HOST KEY KEYS-----" in output
    printed = console_fingerprints(output)
    assert printed == (fingerprint(presented_key(Sshd(clean_sandbox.state_dir).port)),)
    ec2.terminate_instances(InstanceIds=[instance])


def test_latest_console_output_is_for_nitro_types_and_the_bake_reads_either(clean_sandbox):
    ec2 = boto3.client("ec2", region_name="us-east-1")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instances = {kind: ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                                         InstanceType=kind)["Instances"][0]["InstanceId"]
                 for kind in ("t2.micro", "t3.micro")}
    with pytest.raises(ClientError) as refused:
        ec2.get_console_output(InstanceId=instances["t2.micro"], Latest=True)
    assert refused.value.response["Error"]["Code"] == "UnsupportedOperation"
    assert "BEGIN SSH HOST KEY FINGERPRINTS" in ec2.get_console_output(
        InstanceId=instances["t3.micro"], Latest=True)["Output"]
    for instance in instances.values():
        assert console_fingerprints(bake.console_output(ec2, instance))
    ec2.terminate_instances(InstanceIds=list(instances.values()))
