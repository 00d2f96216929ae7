"""Sandbox instances without root: a user with subordinate ids (/etc/subuid, /etc/subgid) and
newuidmap runs the whole sandbox, its instances in a user namespace.

Run as root (CI), the test makes a system user for the run, with a range of subordinate ids,
and removes it after; run as anyone else, it is that user.
"""

from __future__ import annotations

import functools
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3
import pytest

from sandbox.control import Sandbox
from sandbox.daemon import free_port
from sandbox.machines import images
from sandbox.network import client
from tests import layer_helpers
from tests.conftest import project_config
from tests.host_helpers import package_layer
from tests.network_helpers import admin_session, until

# One at a time: both change this host's /var (host_with_history) and read what it holds.
pytestmark = pytest.mark.xdist_group("host-history")

ROOT = Path(__file__).resolve().parents[1]
TEST_USER = "kiln-rootless-test"
SUBORDINATE = "400000-465535"


def _python() -> str:
    """This interpreter when every user may run it; else the system's, of the same version
    (the venv's may be a pyenv build under /root, which only root can reach)."""
    real = Path(sys.executable).resolve()
    reachable = all(os.stat(folder).st_mode & 0o001 for folder in real.parents) and \
        os.stat(real).st_mode & 0o001
    return sys.executable if reachable else "/usr/bin/python{}.{}".format(*sys.version_info)


PYTHON = _python()


@pytest.fixture(scope="module")
def rootless_user():
    if os.geteuid() != 0:
        yield pwd.getpwuid(os.getuid())
        return
    _remove_user()  # one a killed run left, with any process it left running
    # A shell: sshd runs the forced command of a session with it.
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                    "--shell", "/bin/sh", TEST_USER], check=True)
    try:
        subprocess.run(["usermod", "--add-subuids", SUBORDINATE, "--add-subgids", SUBORDINATE,
                        TEST_USER], check=True)
        yield pwd.getpwnam(TEST_USER)
    finally:
        _remove_user()


def _remove_user() -> None:
    """The test user gone, with its processes: userdel refuses a user that still runs one."""
    subprocess.run(["pkill", "-KILL", "-u", TEST_USER], capture_output=True)
    subprocess.run(["userdel", "--force", TEST_USER], capture_output=True)


def run_as(user, argv: list[str], home: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    prefix = [] if os.geteuid() != 0 else [
        "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
        "--inh-caps=-all"]
    # PYTHON with the project's packages on its path (the system's has not the venv's). The
    # checkout is another user's: git is told it is safe to read.
    site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"))
    env = {"PATH": os.environ["PATH"], "HOME": str(home),  # chef-solo on it, as for root
           "LANG": "C.UTF-8", "PYTHONPATH": f"{ROOT}:{site}", "GIT_CONFIG_COUNT": "1",
           "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": str(ROOT)}
    return subprocess.run([*prefix, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def put_away(user, home: Path, run_folder) -> None:
    """The test's home gone from /tmp once the user's processes have ended: as root, moved into
    this run's temporary folder, which pytest removes with the others (deleting a sandbox's
    base image takes seconds); otherwise removed from the user's namespace, whose ids own it."""
    subprocess.run(["pkill", "-KILL", "-u", str(user.pw_uid)], check=False)
    if os.geteuid() == 0:
        try:
            os.rename(home, run_folder.mktemp("rootless-home") / home.name)
            return
        except OSError:
            pass
    run_as(user, [PYTHON, "-m", "sandbox.userns", "rm", str(home)], home)
    shutil.rmtree(home, ignore_errors=True)


def kiln(user, home: Path, *task: str) -> subprocess.CompletedProcess:
    """`invoke TASK…` as `user`, with the settings in `home`; the test fails if it does."""
    argv = [PYTHON, "-c", "import sys; from invoke.main import program; "
            "program.run(['invoke', *sys.argv[1:]])", "-f", str(home / "kiln.yaml"), *task]
    done = run_as(user, argv, home)
    assert done.returncode == 0, f"invoke {' '.join(task)}:\n{done.stdout[-2000:]}" \
                                 f"\n{done.stderr[-3000:]}"
    return done


def test_a_user_without_root_bakes_promotes_and_deploys_in_the_sandbox(rootless_user,
                                                                      host_with_history,
                                                                      tmp_path_factory):
    """The whole path a release engineer takes, run by a user who is not root, on a host where
    dnf has run as root (its logs and cache root's): the bake's instance is an AL2023 machine in
    a user namespace (ec2-user, sudo, the package's account and files, real chef-solo, the app's
    unit and smoke check), and the deployed group's machines pass the load balancer's health
    checks, and carry a client's requests through a listener of their load balancer (its
    process reaching into the machines' network namespaces). Image layers are frozen for every
    process of the sandbox (read-only, nosuid mounts in its namespace). Only listener ports below
    1024 stay root's."""
    home = Path(tempfile.mkdtemp(prefix="kiln-rootless-"))
    (home / "kiln.yaml").write_text(f"kiln:\n  dist: {home / 'dist'}\n"
                                    f"  sandbox:\n    state_dir: {home / 'sandbox'}\n")
    os.chown(home, rootless_user.pw_uid, rootless_user.pw_gid)
    os.chown(home / "kiln.yaml", rootless_user.pw_uid, rootless_user.pw_gid)
    try:
        kiln(rootless_user, home, "bootstrap", "--yes")
        done = kiln(rootless_user, home, "bake", "--version", "1.0.0")
        baked = done.stdout + done.stderr
        assert "Chef Infra Client, version 18.5.0" in baked
        assert "baked ami-" in baked
        assert oct((home / "sandbox" / "machines").stat().st_mode & 0o777) == "0o700"
        kiln(rootless_user, home, "ami.promote", "--version", "1.0.0", "--to", "prod")
        kiln(rootless_user, home, "deploy", "--version", "1.0.0")
        status = json.loads(kiln(rootless_user, home, "status", "--json").stdout)
        [group] = status["clusters"][0]["server_groups"]
        assert (group["in_service"], group["healthy"]) == (2, 2), group
        box = Sandbox(home / "sandbox")
        prod = _deploy_account(box)
        _a_balancer_carries_traffic(box, prod, status["clusters"][0], group)
        _layers_are_frozen(box, prod, group)
        kiln(rootless_user, home, "sandbox.down")
        # Every process the sandbox started has ended (a zombie waits only for its reaper).
        listed = subprocess.run(["ps", "-o", "stat=,args=", "-u", str(rootless_user.pw_uid)],
                                capture_output=True, text=True).stdout.splitlines()
        assert [line for line in listed if not line.startswith("Z")] == []
    finally:
        put_away(rootless_user, home, tmp_path_factory)


def _deploy_account(box: Sandbox):
    """A client maker for the deploy account of `box`, as its administrator's role there."""
    account = project_config()["sandbox"]["accounts"]["prod"]
    role = f"arn:aws:iam::{account['id']}:role/{account['admin_role']}"
    keys = admin_session(box).client("sts").assume_role(
        RoleArn=role, RoleSessionName="rootless-test")["Credentials"]
    session = boto3.Session(aws_access_key_id=keys["AccessKeyId"],
                            aws_secret_access_key=keys["SecretAccessKey"],
                            aws_session_token=keys["SessionToken"], region_name="us-east-1")
    return functools.partial(session.client, endpoint_url=box.endpoint)


def _a_balancer_carries_traffic(box: Sandbox, prod, cluster: dict, group: dict) -> None:
    """A listener on a port a user may bind, added to the environment's load balancer, forwards
    to the group's machines: its requests are answered by the app on them."""
    elbv2, ec2 = prod("elbv2"), prod("ec2")
    balancer_arn = elbv2.describe_listeners(ListenerArns=[cluster["listener"]])[
        "Listeners"][0]["LoadBalancerArn"]
    balancer = elbv2.describe_load_balancers(LoadBalancerArns=[balancer_arn])[
        "LoadBalancers"][0]
    port = free_port("127.0.0.1")
    ec2.authorize_security_group_ingress(GroupId=balancer["SecurityGroups"][0], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
         "IpRanges": [{"CidrIp": "127.0.0.1/32"}]}])
    elbv2.create_listener(LoadBalancerArn=balancer_arn, Protocol="HTTP", Port=port,
                          DefaultActions=[{"Type": "forward",
                                           "TargetGroupArn": group["target_group"]}])
    url = f"http://{balancer['DNSName']}:{port}/"

    def answered():
        assert client.get(box.state_dir, url, cluster["app"], "/health")[0] == 200

    until(answered)


def _layers_are_frozen(box: Sandbox, prod, group: dict) -> None:
    """An image of one of the group's machines, whose ec2-user made a setuid copy of `id`: in
    the server's namespace every layer is a read-only, nosuid mount, the probe runs with the
    caller's ids, and root there (the layers' owner) writes nothing into the layer."""
    ec2 = prod("ec2")
    instance = prod("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[group["name"]])["AutoScalingGroups"][0]["Instances"][0]
    layer_helpers.plant_setuid_probe(box.state_dir, instance["InstanceId"])
    image = ec2.create_image(InstanceId=instance["InstanceId"], Name="probe")["ImageId"]
    layer = images.stack(box.state_dir, image)[0]
    pid = box.moto.pid
    assert layer_helpers.not_frozen(pid, box.state_dir) == []
    assert layer_helpers.run_probe(pid, layer) == "0"
    said = layer_helpers.write_into(pid, layer)
    assert said.count("Read-only file system") == 2, said
    ec2.deregister_image(ImageId=image)


# Run by the user in a user namespace of its own (as the sandbox server runs): a machine of the
# package's layer, where ec2-user installs the package with sudo and dnf.
MACHINE = r"""
import subprocess, sys
from sandbox.machines import instances as machines
state, layer, instance = sys.argv[1], sys.argv[2], "i-0000000000000f00d"
try:
    machines.launch(state, instance, "10.0.0.9", layers=[layer])
    done = subprocess.run([*machines.enter_command(state, instance), "sh", "-c",
                           "sudo -n dnf -y -q install /srv/kiln-hello.rpm && "
                           "cat /opt/hello/greeting"], capture_output=True, text=True, timeout=180)
    print(done.stdout + done.stderr)
    sys.exit(done.returncode)
finally:
    machines.terminate_all(state)
"""
IN_NAMESPACE = ("import subprocess, sys\nfrom sandbox import userns\n"
                "done = userns.spawn([sys.executable, *sys.argv[1:]], stdout=subprocess.PIPE, "
                "stderr=subprocess.STDOUT)\n"
                "sys.stdout.write(done.communicate(timeout=280)[0].decode(errors='replace'))\n"
                "sys.exit(done.returncode)")


def test_dnf_runs_on_a_machine_without_root_on_a_host_where_dnf_ran_as_root(
        rootless_user, host_with_history, tmp_path_factory):
    """The host's /var/log/dnf.log (root's, which a user namespace cannot write) is not the
    machine's: its /var is its image's."""
    home = Path(tempfile.mkdtemp(prefix="kiln-rootless-"))
    layer = package_layer(home / "package")
    subprocess.run(["chown", "-R", f"{rootless_user.pw_uid}:{rootless_user.pw_gid}", str(home)],
                   check=True)
    try:
        done = run_as(rootless_user, [PYTHON, "-c", IN_NAMESPACE, "-c", MACHINE,
                                      str(home / "sandbox"), str(layer)], home)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert done.stdout.split()[-1:] == ["hello"]
    finally:
        put_away(rootless_user, home, tmp_path_factory)


def test_a_user_without_subordinate_ids_is_told_what_is_missing_in_one_line(tmp_path):
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() != 0:
        pytest.skip("needs root to run as nobody")  # CI runs as root
    done = run_as(nobody, [PYTHON, "-c", "from sandbox import userns\n"
                           "from cloud.errors import KilnError\n"
                           "try:\n    userns.spawn(['true'])\n"
                           "except KilnError as error:\n    print(error)"], tmp_path)
    assert done.stdout.strip().splitlines() == [
        "sandbox: nobody has no 65536 subordinate uids in /etc/subuid, which instances without "
        "root need (usermod --add-subuids START-END nobody, as root), or run the sandbox as root"]
