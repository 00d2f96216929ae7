"""sandbox/aws/ec2/run_instances.py and server_groups.py: Auto Scaling runs the baked machine.

A group launched from an image that holds a machine boots real sandbox machines: the image's
enabled units start, the launch template's user data runs as cloud-init runs it, the load
balancer health-checks and reaches them, and an instance whose machine stops is replaced.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from pathlib import Path

import boto3
import pytest

from sandbox.control import Sandbox
from sandbox.machines import instances as machines
from tests.image_helpers import available
from tests.machine_helpers import web_image
from tests.network_helpers import admin_session, balancer_groups, get, health, until

CLOUD_CONFIG = """#cloud-config
write_files:
  - path: /etc/web/greeting
    content: |
      greeting from cloud-config
    permissions: '0640'
  - path: /var/lib/web/late
    content: written late
    defer: true
runcmd:
  - [sh, -c, "echo ran runcmd > /var/lib/web/runcmd"]
  - systemctl restart web.service
packages: [nginx]
"""


@pytest.fixture
def web(clean_sandbox):
    ec2 = boto3.client("ec2")
    image = web_image(clean_sandbox, ec2, "web")
    available(ec2, image)
    return image


def server_group(ec2, image: str, user_data: str, capacity: int = 1, session=boto3) -> dict:
    """A load balancer on :80 forwarding to the target group of an Auto Scaling group."""
    elbv2, autoscaling = session.client("elbv2"), session.client("autoscaling")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{n}.0/24",
                                 AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
               for n, z in ((1, "a"), (2, "b"))]
    balancer = elbv2.create_load_balancer(
        Name="web", Subnets=subnets,
        SecurityGroups=balancer_groups(ec2, vpc, 80))["LoadBalancers"][0]
    group = elbv2.create_target_group(
        Name="web", Protocol="HTTP", Port=8080, VpcId=vpc, HealthCheckPath="/health",
        HealthCheckIntervalSeconds=5, HealthyThresholdCount=2,
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=80,
                          DefaultActions=[{"Type": "forward", "TargetGroupArn": group}])
    template = ec2.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={
        "ImageId": image, "InstanceType": "t3.micro",
        "UserData": base64.b64encode(user_data.encode()).decode()})["LaunchTemplate"]
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="web", MinSize=capacity, MaxSize=capacity,
        DesiredCapacity=capacity, VPCZoneIdentifier=",".join(subnets), TargetGroupARNs=[group],
        LaunchTemplate={"LaunchTemplateId": template["LaunchTemplateId"], "Version": "1"})
    return {"dns": balancer["DNSName"], "group": group}


def instance_ids(session=boto3) -> list[str]:
    asg = session.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=["web"])["AutoScalingGroups"][0]
    return sorted(i["InstanceId"] for i in asg["Instances"])


def healthy(group: str, count: int) -> None:
    def check():
        assert [h["State"] for h in health(group)] == ["healthy"] * count

    until(check, timeout=60)


def in_instance(box, instance_id: str, path: str):
    """A file as the instance wrote it (its writable layer)."""
    return machines.upper(box.state_dir, instance_id) / path.lstrip("/")


def test_a_server_group_runs_its_images_units_and_cloud_config(clean_sandbox, web):
    lb = server_group(boto3.client("ec2"), web, CLOUD_CONFIG)
    healthy(lb["group"], 1)
    (instance,) = instance_ids()

    def greeted():
        assert get(lb["dns"], 80) == (200, "hello\ngreeting from cloud-config\n")

    until(greeted, timeout=30)
    finished(clean_sandbox, instance)
    greeting = in_instance(clean_sandbox, instance, "/etc/web/greeting")
    assert oct(greeting.stat().st_mode & 0o777) == "0o640"
    assert in_instance(clean_sandbox, instance, "/var/lib/web/runcmd").read_text() == "ran runcmd\n"
    assert in_instance(clean_sandbox, instance, "/var/lib/web/late").read_text() == "written late"
    log = in_instance(clean_sandbox, instance, "/var/log/cloud-init-output.log").read_text()
    assert "not run: packages" in log and "Cloud-init finished" in log

    # An instance of an image of this one, with no user data of its own, runs none of this
    # one's again: cloud-init runs user data once per instance.
    ec2 = boto3.client("ec2")
    image = ec2.create_image(InstanceId=instance, Name="configured")["ImageId"]
    available(ec2, image)
    copy = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    until(lambda: _assert_running(clean_sandbox, copy), timeout=30)
    until(lambda: _assert_serving(clean_sandbox, copy), timeout=30)
    assert not in_instance(clean_sandbox, copy, "/var/lib/web/runcmd").exists()  # not written
    assert not in_instance(clean_sandbox, copy, f"/var/lib/cloud/instances/{copy}").exists()

    pids = machine_pids(clean_sandbox.state_dir, [instance, copy])
    clean_sandbox.reset()
    until(lambda: _none_alive(pids), timeout=15)
    assert not machines.instance_dir(clean_sandbox.state_dir, instance).exists()
    assert not machines.instance_dir(clean_sandbox.state_dir, copy).exists()
    with pytest.raises(OSError):
        get(lb["dns"], 80, timeout=2)


def _assert_running(box, instance: str) -> None:
    assert machines.running(box.state_dir, instance)


def _assert_serving(box, instance: str) -> None:
    """The image's enabled app answers inside the instance, its greeting from the image."""
    try:
        with machines.connect(box.state_dir, instance, 8080) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            answer = sock.makefile("rb").read()
    except OSError as error:  # not listening yet
        raise AssertionError(error) from None
    assert answer.endswith(b"hello\ngreeting from cloud-config\n")


def plain_image(ec2) -> str:
    """An image with no machine in it: its instances run nothing."""
    return ec2.register_image(
        Name="plain", RootDeviceName="/dev/xvda", Architecture="x86_64",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}])["ImageId"]


def test_pending_instances_count_toward_the_desired_capacity(clean_sandbox):
    clean_sandbox.set_time_scale(0.2)  # Auto Scaling's instances stay Pending for 12 s
    try:
        ec2 = boto3.client("ec2")
        server_group(ec2, plain_image(ec2), "#!/bin/sh\ntrue\n", capacity=1)
        boto3.client("autoscaling").update_auto_scaling_group(
            AutoScalingGroupName="web", MaxSize=2, DesiredCapacity=2)
        asg = boto3.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=["web"])["AutoScalingGroups"][0]
        assert [i["LifecycleState"] for i in asg["Instances"]] == ["Pending", "Pending"]
    finally:
        clean_sandbox.set_time_scale(None)


def test_an_instance_stopped_with_stop_instances_is_replaced(clean_sandbox):
    ec2 = boto3.client("ec2")
    server_group(ec2, plain_image(ec2), "#!/bin/sh\ntrue\n", capacity=2)
    first = instance_ids()
    ec2.stop_instances(InstanceIds=[first[0]])

    def replaced():
        now = instance_ids()
        assert first[0] not in now and first[1] in now and len(now) == 2

    until(replaced, timeout=30)
    state = ec2.describe_instances(InstanceIds=[first[0]])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "terminated"


def test_a_slow_time_scale_set_earlier_does_not_hold_back_the_next_check(clean_sandbox):
    """The check's wait is measured when it is asked about: a test (or a user) that set a slow
    time scale and then set it back does not leave the group unchecked for the slow wait."""
    clean_sandbox.set_time_scale(50)  # a check every 500 s
    time.sleep(1)  # the checks' loop is now waiting under that scale
    clean_sandbox.set_time_scale(None)
    test_an_instance_stopped_with_stop_instances_is_replaced(clean_sandbox)


def test_down_ends_every_machine_of_a_server_group(tmp_path, sandbox_box):
    box = Sandbox(tmp_path / "own")
    box.up()
    try:
        own = admin_session(box)
        ec2 = own.client("ec2")
        image = web_image(box, ec2, "web")
        available(ec2, image)
        lb = server_group(ec2, image, "#!/bin/sh\ntrue\n", capacity=2, session=own)

        def booted():
            ids = instance_ids(own)
            assert ids and any(machines.running(box.state_dir, i) for i in ids)

        until(booted, timeout=60)  # the other may still be booting when the sandbox goes down
        ids = instance_ids(own)
        pids = machine_pids(box.state_dir, ids)
    finally:
        box.down()
    assert pids
    _none_alive(pids)
    assert not _processes_naming(box.state_dir)
    assert not any(machines.instance_dir(box.state_dir, i).exists() for i in ids)
    with pytest.raises(OSError):
        get(lb["dns"], 80, timeout=2)


def test_a_script_in_user_data_runs_as_root_and_a_stopped_machine_is_replaced(
        clean_sandbox, web):
    script = ("#!/bin/bash\nset -euo pipefail\ninstall -d /etc/web\n"
              "echo \"greeting from $(id -un)\" > /etc/web/greeting\n"
              "systemctl restart web.service\n")
    lb = server_group(boto3.client("ec2"), web, script, capacity=2)
    healthy(lb["group"], 2)
    first = instance_ids()
    for instance in first:
        finished(clean_sandbox, instance)
        part = in_instance(clean_sandbox, instance, f"/var/lib/cloud/instances/{instance}"
                                                    "/scripts/part-001")
        assert part.read_text() == script
    assert {get(lb["dns"], 80)[1] for _ in range(4)} == {"hello\ngreeting from root\n"}

    os.kill(machines.init_pid(clean_sandbox.state_dir, first[0]), signal.SIGKILL)

    def replaced():
        now = instance_ids()
        assert first[0] not in now and first[1] in now and len(now) == 2

    until(replaced, timeout=30)
    state = boto3.client("ec2").describe_instances(InstanceIds=[first[0]])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated"

    def removed():  # the machine's folder goes once its processes are gone, just after
        assert not machines.instance_dir(clean_sandbox.state_dir, first[0]).exists()

    until(removed, timeout=10)
    healthy(lb["group"], 2)
    (new,) = set(instance_ids()) - set(first)
    finished(clean_sandbox, new)  # the replacement ran the launch template's user data too
    assert {get(lb["dns"], 80)[1] for _ in range(4)} == {"hello\ngreeting from root\n"}


def machine_pids(state_dir, ids: list[str]) -> list[int]:
    pids = []
    for instance in ids:
        meta = machines.instance_dir(state_dir, instance) / "instance.json"
        if meta.is_file():
            recorded = json.loads(meta.read_text())
            pids += [recorded[key] for key in ("starter_pid", "init_pid", "forward_pid")
                     if key in recorded]
    return pids


def _none_alive(pids: list[int]) -> None:
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", pid


def _processes_naming(state_dir) -> list[int]:
    """Processes whose command line names the sandbox's state directory (server, sshd, boots)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if str(state_dir).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def finished(box, instance: str) -> None:
    """Wait for cloud-init's final stage to end on the instance."""
    def check():
        assert in_instance(box, instance, "/var/lib/cloud/instances/"
                                          f"{instance}/boot-finished").is_file()

    until(check, timeout=30)
