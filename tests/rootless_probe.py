"""Run by tests/test_sandbox_rootless.py as a user without root: a sandbox of its own, one
instance, a session into it. Prints what it saw as JSON on the last line.

    python tests/rootless_probe.py STATE_DIR
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import paramiko
from fabric import Config, Connection

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.control import Sandbox  # noqa: E402
from sandbox.sshd import Sshd, current_user  # noqa: E402
from tests.network_helpers import admin_session, balancer_groups, get  # noqa: E402
from tests.test_sandbox_instances import BAKE_KEY_TAGS, base_image  # noqa: E402

COMMANDS = {
    "os": ". /etc/os-release && echo $ID $VERSION_ID",
    "user": "id -un; id -u",
    "root": "sudo -n id -u",
    "write": "echo kept | sudo -n tee /usr/local/bin/kiln-probe >/dev/null && "
             "sudo -n mkdir -p /opt/app && sudo -n chown ec2-user /opt/app && "
             "stat -c %U /opt/app && cat /usr/local/bin/kiln-probe",
    "repo": "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$KILN_PORT/",
    "chef": "sudo -n chef-solo --version",
    "host": "test -e /usr/bin/zcat && echo programs; ls /home",
    # A package whose files belong to an account its %pre script makes.
    "package": "sudo -n dnf -y -q install ./probe-1-1.noarch.rpm >/dev/null && "
               "stat -c '%U %a' /opt/probe/secret",
    # Chef: an account, a folder it owns, a unit enabled and started.
    "converge": "sudo -n chef-solo -c solo.rb -o 'recipe[probe]' >chef.log 2>&1 "
                "|| tail -5 chef.log; stat -c %U /var/lib/web && "
                "curl -s --retry 20 --retry-delay 0 --retry-connrefused http://127.0.0.1:8080/name",
}
SPEC = """Name: probe
Version: 1
Release: 1
Summary: probe
License: MIT
BuildArch: noarch
%description
probe
%pre
getent passwd probe >/dev/null || useradd -r -M -d /opt/probe probe
%install
mkdir -p %{buildroot}/opt/probe
echo secret > %{buildroot}/opt/probe/secret
%files
%attr(0640,probe,probe) /opt/probe/secret
"""
RECIPE = """
user 'web' do
  system true
end
directory '/var/lib/web' do
  owner 'web'
end
file '/var/lib/web/name' do
  content "#{node['hostname']}\n"
end
file '/etc/systemd/system/web.service' do
  content "[Service]\nUser=web\nExecStart=/usr/bin/python3 -m http.server 8080 " \
          "--directory /var/lib/web\n[Install]\nWantedBy=multi-user.target\n"
end
service 'web' do
  action [:enable, :start]
end
"""
SOLO = """cookbook_path '/home/ec2-user/cookbooks'
file_cache_path '/var/chef/cache'
chef_license 'accept-no-persist'
"""


def build_rpm(folder: Path) -> Path:
    top = folder / "rpmbuild"
    (folder / "probe.spec").write_text(SPEC)
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}",
                    str(folder / "probe.spec")], check=True, capture_output=True,
                   env={**os.environ, "HOME": str(folder)})
    return next((top / "RPMS").rglob("*.rpm"))


def through_a_load_balancer(session, instance: dict) -> list:
    """The app the converge started, reached through a load balancer (the sandbox server
    opens the connection inside the instance's network namespace): its health, one answer."""
    ec2, elbv2 = session.client("ec2"), session.client("elbv2")
    vpc = instance["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]][:2]
    balancer = elbv2.create_load_balancer(
        Name="rootless", Subnets=subnets,
        SecurityGroups=balancer_groups(ec2, vpc, 8088))["LoadBalancers"][0]
    group = elbv2.create_target_group(
        Name="rootless", Protocol="HTTP", Port=8080, VpcId=vpc, HealthCheckPath="/name",
        HealthCheckIntervalSeconds=5, HealthyThresholdCount=2)["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=group, Targets=[{"Id": instance["InstanceId"]}])
    elbv2.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP",
                          Port=8088, DefaultActions=[{"Type": "forward", "TargetGroupArn": group}])
    deadline, state = time.monotonic() + 30, None
    while time.monotonic() < deadline and state != "healthy":
        time.sleep(0.2)
        state = elbv2.describe_target_health(TargetGroupArn=group)[
            "TargetHealthDescriptions"][0]["TargetHealth"]["State"]
    return [state, *get(balancer["DNSName"], 8088, "/name")]


def main(state_dir: str) -> None:
    box = Sandbox(state_dir)
    box.up()
    seen = {}
    try:
        ec2 = admin_session(box).client("ec2")
        pem = ec2.create_key_pair(KeyName="rootless", KeyType="ed25519",
                                  TagSpecifications=BAKE_KEY_TAGS)["KeyMaterial"]
        instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1,
                                     KeyName="rootless")["Instances"][0]
        key = paramiko.Ed25519Key.from_private_key(io.StringIO(pem))
        port = box.moto.port
        rpm = build_rpm(Path(state_dir).parent)
        with Connection(instance["PublicIpAddress"], user=current_user(),
                        port=Sshd(box.state_dir).port, connect_timeout=10,
                        config=Config(overrides={"run": {"in_stream": False}}),
                        connect_kwargs={"pkey": key, "look_for_keys": False,
                                        "allow_agent": False}) as ssh:
            ssh.put(str(rpm), "probe-1-1.noarch.rpm")
            ssh.run("mkdir -p cookbooks/probe/recipes", hide=True)
            ssh.put(io.StringIO(RECIPE), "cookbooks/probe/recipes/default.rb")
            ssh.put(io.StringIO("name 'probe'\nversion '1.0.0'\n"), "cookbooks/probe/metadata.rb")
            ssh.put(io.StringIO(SOLO), "solo.rb")
            for name, command in COMMANDS.items():
                result = ssh.run(command.replace("$KILN_PORT", str(port)), warn=True, hide=True)
                seen[name] = [result.exited, result.stdout.strip(), result.stderr.strip()[-300:]]
        seen["balanced"] = through_a_load_balancer(admin_session(box), instance)
        seen["machines_mode"] = oct(Path(state_dir, "machines").stat().st_mode & 0o777)
    finally:
        box.down()
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1])
