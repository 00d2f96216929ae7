"""GetConsoleOutput of a sandbox instance prints the host key its SSH server presents, in
cloud-init's format, as an EC2 instance does at first boot."""

from __future__ import annotations

import socket

import boto3
import paramiko

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
