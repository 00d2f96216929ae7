"""Sandbox instances through a real sshd: key pairs from the sandbox's EC2, Fabric sessions that
land inside the instance (its own namespaces over layers, Amazon Linux 2023 to the software on
it), as ec2-user, and what the instance can and cannot reach."""

from __future__ import annotations

import io
import os
from pathlib import Path

import boto3
import paramiko
import pytest
from fabric import Config, Connection

from sandbox.aws.ec2.base_images import AMAZON
from sandbox.control import ensure_up
from sandbox.machines import instances as machines
from sandbox.sshd import Sshd, current_user
from tests.network_helpers import default_group

BAKE_KEY_TAGS = [{"ResourceType": "key-pair",
                  "Tags": [{"Key": "kiln:role", "Value": "bake-key"}]}]


@pytest.fixture
def ec2(clean_sandbox):
    return boto3.client("ec2", region_name="us-east-1")


def base_image(ec2) -> str:
    images = ec2.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["al2023-ami-2023.*-x86_64"]},
        {"Name": "architecture", "Values": ["x86_64"]}])["Images"]
    return max(images, key=lambda i: i["CreationDate"])["ImageId"]


def default_vpc(ec2) -> str:
    return ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0][
        "VpcId"]


def ssh_group(ec2) -> str:
    """A security group of the default VPC admitting every TCP port from this host (the sandbox
    sshd's clients come from 127.0.0.1), so SSH reaches its instances; made once per sandbox."""
    vpc = default_vpc(ec2)
    found = ec2.describe_security_groups(Filters=[
        {"Name": "vpc-id", "Values": [vpc]},
        {"Name": "group-name", "Values": ["ssh-from-here"]}])["SecurityGroups"]
    if found:
        return found[0]["GroupId"]
    group = ec2.create_security_group(GroupName="ssh-from-here", Description="SSH",
                                      VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535,
         "IpRanges": [{"CidrIp": "127.0.0.1/32"}]}])
    return group


def launch(ec2, key_name: str = "bake-key", key_type: str = "rsa",
           tags=BAKE_KEY_TAGS) -> tuple[dict, str]:
    pem = ec2.create_key_pair(KeyName=key_name, KeyType=key_type,
                              TagSpecifications=tags)["KeyMaterial"]
    # SSH from here, and the default group's members (a load balancer in it) as well.
    default = default_group(ec2, default_vpc(ec2))
    instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1,
                                 KeyName=key_name, SecurityGroupIds=[ssh_group(ec2), default])[
        "Instances"][0]
    return instance, pem


def connect(box, instance: dict, pem: str) -> Connection:
    loader = paramiko.RSAKey if "RSA" in pem else paramiko.Ed25519Key
    pkey = loader.from_private_key(io.StringIO(pem))
    return Connection(instance["PublicIpAddress"], user=current_user(),
                      port=Sshd(box.state_dir).port, connect_timeout=10,
                      config=Config(overrides={"run": {"in_stream": False}}),
                      connect_kwargs={"pkey": pkey, "look_for_keys": False,
                                      "allow_agent": False})


def out(ssh, command: str) -> str:
    return ssh.run(command, hide=True).stdout.strip()


def test_a_session_lands_inside_an_amazon_linux_2023_instance_as_ec2_user(ec2, clean_sandbox):
    instance, pem = launch(ec2)
    assert instance["PublicIpAddress"] == "127.0.0.1"
    assert instance["PrivateIpAddress"] != "127.0.0.1"
    with connect(clean_sandbox, instance, pem) as ssh:
        assert out(ssh, "id -un; echo $HOME; pwd").split() == [
            "ec2-user", "/home/ec2-user", "/home/ec2-user"]
        assert out(ssh, ". /etc/os-release && echo $ID $VERSION_ID") == "amzn 2023"
        assert out(ssh, "readlink /usr/bin/yum") == "dnf-3"
        assert out(ssh, "rpm -q --qf '%{NAME} %{VERSION}' system-release") == \
            "system-release 2023"
        assert out(ssh, "cat /proc/1/comm") == "systemd"
        assert out(ssh, "getent hosts $(hostname)").split()[0] == instance["PrivateIpAddress"]
        assert ssh.run("exit 3", warn=True, hide=True).exited == 3
        # sudo is real: root inside the instance, its writes stay in the instance's own layer.
        assert out(ssh, "sudo -n id -u") == "0"
        ssh.run("sudo -n sh -c 'echo baked > /etc/kiln-instance-probe'", hide=True)
        assert out(ssh, "cat /etc/kiln-instance-probe") == "baked"
    assert not Path("/etc/kiln-instance-probe").exists()
    upper = machines.upper(clean_sandbox.state_dir, instance["InstanceId"])
    assert (upper / "etc/kiln-instance-probe").read_text() == "baked\n"


def test_a_session_never_runs_as_root_on_the_host(ec2, clean_sandbox):
    instance, pem = launch(ec2)
    with connect(clean_sandbox, instance, pem) as ssh:
        # The session's own uid, and what sudo's root keeps: no mounts, no devices.
        assert out(ssh, "grep ^Uid /proc/self/status").split()[1] == "1000"
        assert ssh.run("sudo -n mount -t tmpfs tmpfs /mnt", warn=True, hide=True).failed
        assert ssh.run("sudo -n mknod /tmp/disk b 8 0", warn=True, hide=True).failed
        # The host's files are not there to reach: not the sandbox's state, not root's home.
        state = str(clean_sandbox.state_dir)
        assert out(ssh, f"find {state} /root -mindepth 1 | wc -l") == "0"


def test_fabric_put_goes_over_sftp_into_the_instance_home(ec2, clean_sandbox, tmp_path):
    instance, pem = launch(ec2, key_type="ed25519")
    source = tmp_path / "node.json"
    source.write_text('{"run_list": []}\n')
    with connect(clean_sandbox, instance, pem) as ssh:
        ssh.run("mkdir -p kiln-bake", hide=True)
        ssh.put(str(source), "kiln-bake/node.json")
        assert out(ssh, "cat /home/ec2-user/kiln-bake/node.json") == source.read_text().strip()
        back = tmp_path / "back.json"
        ssh.get("kiln-bake/node.json", str(back))
        assert back.read_text() == source.read_text()


@pytest.mark.parametrize("tags", [[], [{"ResourceType": "key-pair",
                                         "Tags": [{"Key": "kiln:role", "Value": "other"}]}]])
def test_only_key_pairs_that_the_bake_created_open_a_session(ec2, clean_sandbox, tags):
    instance, pem = launch(ec2, tags=tags)
    with pytest.raises(paramiko.AuthenticationException), \
            connect(clean_sandbox, instance, pem) as ssh:
        ssh.run("true", hide=True)


def test_an_imported_key_pair_opens_no_session(ec2, clean_sandbox):
    key = paramiko.RSAKey.generate(2048)
    ec2.import_key_pair(KeyName="mine", PublicKeyMaterial=f"ssh-rsa {key.get_base64()}".encode(),
                        TagSpecifications=BAKE_KEY_TAGS)
    instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1,
                                 KeyName="mine", SecurityGroupIds=[ssh_group(ec2)])[
        "Instances"][0]
    buffer = io.StringIO()
    key.write_private_key(buffer)
    with pytest.raises(paramiko.AuthenticationException), \
            connect(clean_sandbox, instance, buffer.getvalue()) as ssh:
        ssh.run("true", hide=True)


def test_terminate_ends_every_process_and_removes_the_instance(ec2, clean_sandbox):
    instance, pem = launch(ec2)
    state, instance_id = clean_sandbox.state_dir, instance["InstanceId"]
    world = machines.instance_dir(state, instance_id)
    with connect(clean_sandbox, instance, pem) as ssh:
        # A daemon that outlives the session, as dnf's gpg-agent outlives chef-solo.
        ssh.run("sudo -n setsid sleep 1000 >/dev/null 2>&1 < /dev/null &", hide=True)
    init = machines.init_pid(state, instance_id)
    assert init and Path(f"/proc/{init}").exists()
    ec2.terminate_instances(InstanceIds=[instance_id])
    assert not world.exists()
    assert _gone(init)
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit()
                and _cmdline(pid) == "sleep 1000" and not _gone(int(pid))]
    assert instance_id not in Sshd(state).authorized_keys.read_text()
    with pytest.raises(paramiko.AuthenticationException), \
            connect(clean_sandbox, instance, pem) as ssh:
        ssh.run("true", hide=True)


def _gone(pid: int) -> bool:
    """No such process, or one that has ended and waits only for its parent to notice."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_reset_forgets_every_instance(ec2, clean_sandbox):
    instance, _ = launch(ec2)
    clean_sandbox.reset()
    assert Sshd(clean_sandbox.state_dir).authorized_keys.read_text() == ""
    assert not machines.instance_dir(clean_sandbox.state_dir, instance["InstanceId"]).exists()


def test_two_instances_listen_on_the_same_port_and_reach_only_the_sandbox(ec2, clean_sandbox):
    state = clean_sandbox.state_dir
    first, pem = launch(ec2, key_name="one")
    second, pem2 = launch(ec2, key_name="two")
    serve = ("sudo -n setsid python3 -m http.server 8080 --directory /etc >/dev/null 2>&1 "
             "< /dev/null &")
    sshd_port = Sshd(state).port
    endpoint = clean_sandbox.endpoint
    for instance, key in ((first, pem), (second, pem2)):
        with connect(clean_sandbox, instance, key) as ssh:
            ssh.run(f"echo {instance['InstanceId']} | sudo -n tee /etc/whoami >/dev/null",
                    hide=True)
            ssh.run(serve, hide=True)
            # The sandbox's endpoint (its S3) answers; the host's other listeners do not.
            assert out(ssh, f"curl -s -o /dev/null -w '%{{http_code}}' "
                            f"{endpoint}/moto-api/config")[0] == "2"
            assert ssh.run(f"curl -s --max-time 3 telnet://127.0.0.1:{sshd_port} </dev/null",
                           warn=True, hide=True).failed
            assert ssh.run("curl -s --max-time 3 http://10.0.0.1/", warn=True,
                           hide=True).failed
    for instance in (first, second):
        instance_id = instance["InstanceId"]
        assert machines.address(state, instance_id) == instance["PrivateIpAddress"]
        assert _get(state, instance_id, "/whoami") == f"{instance_id}\n"


def _get(state, instance_id: str, path: str) -> str:
    for _ in range(50):
        try:
            sock = machines.connect(state, instance_id, 8080)
            break
        except ConnectionRefusedError:
            import time

            time.sleep(0.1)
    with sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return response.split(b"\r\n\r\n", 1)[1].decode()


def test_an_instance_without_a_public_ip_keeps_none(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1,
                                 SubnetId=subnet)["Instances"][0]
    assert "PublicIpAddress" not in instance
    assert instance["PrivateIpAddress"].startswith("10.9.1.")


def test_base_images_match_the_default_filters_in_every_region_after_reset(clean_sandbox):
    clean_sandbox.reset()
    for region in ("us-east-1", "eu-west-1"):
        ec2 = boto3.client("ec2", region_name=region)
        images = ec2.describe_images(Owners=["amazon"], Filters=[
            {"Name": "name", "Values": ["al2023-ami-2023.*-x86_64"]},
            {"Name": "architecture", "Values": ["x86_64"]}])["Images"]
        images.sort(key=lambda i: i["CreationDate"], reverse=True)
        assert [i["Name"] for i in images] == [
            "al2023-ami-2023.6.20241121.0-kernel-6.12-x86_64",
            "al2023-ami-2023.6.20241121.0-kernel-6.1-x86_64",
            "al2023-ami-2023.6.20241111.0-kernel-6.1-x86_64"]
        # Amazon's parameter names the newest image of the default kernel line.
        latest = boto3.client("ssm", region_name=region).get_parameter(
            Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")
        assert latest["Parameter"]["Value"] == images[1]["ImageId"]
        newest = images[0]
        assert newest["OwnerId"] == AMAZON and newest["ImageOwnerAlias"] == "amazon"
        assert newest["RootDeviceType"] == "ebs" and newest["RootDeviceName"] == "/dev/xvda"
        assert newest["EnaSupport"] is True and newest["VirtualizationType"] == "hvm"
        assert newest["BlockDeviceMappings"][0]["DeviceName"] == "/dev/xvda"


def test_overlay_points_the_bake_at_the_sandbox_sshd(kiln_settings, sandbox_box, capsys):
    settings = kiln_settings()
    ensure_up(settings)
    port = Sshd(sandbox_box.state_dir).port
    assert settings.bake.ssh_port == port
    assert settings.bake.ssh_user == current_user()
    assert settings.bake.ssh_cidrs == ["127.0.0.1/32"]
    assert "no chef-solo on this machine" in settings.bake.chef_install_command
    assert settings.bake.sudo is True
    assert settings.bake.smoke_commands == kiln_settings().bake.smoke_commands
    assert (f"sandbox: bake instances are reached over the sandbox sshd at 127.0.0.1:{port}"
            in capsys.readouterr().err)
    settings.bake["chef_install_command"] = None  # a caller's own choice survives a reconnect
    ensure_up(settings)
    assert settings.bake.chef_install_command is None and settings.bake.ssh_port == port
    configured = kiln_settings(bake={"ssh_cidrs": ["10.0.0.0/8"], "smoke_commands": ["true"]})
    ensure_up(configured)
    assert configured.bake.ssh_cidrs == ["10.0.0.0/8"]
    assert configured.bake.smoke_commands == ["true"]
