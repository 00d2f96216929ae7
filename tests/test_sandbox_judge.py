"""A judge over a running sandbox, as a local attacker would look at it: no setuid or
world-writable file that another user can reach under the state dir, no listener of the
sandbox's beyond loopback, instance processes without the capabilities a container drops, and
every image layer a read-only, nosuid mount for every process of the sandbox (in its server's
mount namespace) while the host's mount table holds none of them.

It looks at this worker's shared sandbox after launching a machine in it, so it also judges what
earlier tests of the worker left there."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import boto3
import pytest

from sandbox.machines import images
from sandbox.machines import instances as machines
from tests import layer_helpers
from tests.test_sandbox_instances import base_image, ssh_group

# One worker runs the module (an xdist group): its module-scoped `machine` is made once.
pytestmark = pytest.mark.xdist_group("sandbox-judge")

# Capabilities no sandbox machine may hold (Linux's numbers): DAC_READ_SEARCH (open_by_handle_at),
# SYS_MODULE, SYS_RAWIO, SYS_PTRACE, SYS_ADMIN, SYS_BOOT, MKNOD, SYS_TIME, AUDIT_CONTROL.
FORBIDDEN_CAPS = {"CAP_DAC_READ_SEARCH": 2, "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17,
                  "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22,
                  "CAP_MKNOD": 27, "CAP_SYS_TIME": 25, "CAP_AUDIT_CONTROL": 30}


@pytest.fixture(scope="module")
def machine(sandbox_box):
    ec2 = boto3.client("ec2", region_name="us-east-1")
    ec2.create_key_pair(KeyName="judged", TagSpecifications=[
        {"ResourceType": "key-pair", "Tags": [{"Key": "kiln:role", "Value": "bake-key"}]}])
    instance = ec2.run_instances(ImageId=base_image(ec2), MinCount=1, MaxCount=1,
                                 KeyName="judged", SecurityGroupIds=[ssh_group(ec2)])[
        "Instances"][0]["InstanceId"]
    yield instance
    ec2.terminate_instances(InstanceIds=[instance])
    ec2.delete_key_pair(KeyName="judged")


@pytest.fixture(scope="module")
def probe_layer(sandbox_box, machine):
    """The top layer of an image of the judged machine, whose ec2-user made a copy of `id`
    setuid to itself before the image was made."""
    ec2 = boto3.client("ec2", region_name="us-east-1")
    layer_helpers.plant_setuid_probe(sandbox_box.state_dir, machine)
    image = ec2.create_image(InstanceId=machine, Name="judged-probe")["ImageId"]
    yield images.stack(sandbox_box.state_dir, image)[0]
    ec2.deregister_image(ImageId=image)


def _reachable_by_others(path: Path, top: Path) -> bool:
    """Whether a user who is neither owner nor group can walk from / to `path`."""
    for folder in [*reversed(path.parents)]:
        if not folder.is_relative_to(top.parent) and folder != top.parent:
            continue
        try:
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _walk(top: Path):
    for root, folders, files in os.walk(top):
        for name in folders + files:
            yield Path(root) / name


def test_no_setuid_or_world_writable_file_under_the_state_dir_is_within_others_reach(
        sandbox_box, machine):
    top = sandbox_box.state_dir
    found = []
    for path in _walk(top):
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue  # gone meanwhile
        if stat.S_ISLNK(mode):
            continue
        risky = mode & (stat.S_ISUID | stat.S_ISGID) or (
            mode & stat.S_IWOTH and not (stat.S_ISDIR(mode) and mode & stat.S_ISVTX))
        if risky and _reachable_by_others(path, top):
            found.append(f"{oct(mode)} {path}")
    assert not found, "\n".join(found[:20])


def _sandbox_pids(box) -> set[int]:
    """The sandbox's server, its sshd, and every process they started."""
    roots = {box.moto.pid}
    sshd_pid = box.state_dir / "sshd" / "sshd.pid"
    if sshd_pid.exists():
        roots.add(int(sshd_pid.read_text().split()[0]))
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1]
                                               .split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found = {pid for pid in roots if pid}
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return found


def _listening(pids: set[int]) -> list[str]:
    """Host-namespace TCP listeners whose socket belongs to one of `pids`: address:port."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                found.append(_address(fields[1], width))
    return found


def _address(field: str, width: int) -> str:
    host, port = field.split(":")
    raw = b"".join(bytes.fromhex(host[i:i + 8])[::-1] for i in range(0, width, 8))
    address = ipaddress.ip_address(raw)
    return f"{address}:{int(port, 16)}"


def _loopback(listener: str) -> bool:
    address = ipaddress.ip_address(listener.rsplit(":", 1)[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def test_the_sandbox_listens_on_loopback_only(sandbox_box, machine):
    listeners = _listening(_sandbox_pids(sandbox_box))
    assert listeners, "the judge found none of the sandbox's listeners"
    beyond = [address for address in listeners if not _loopback(address)]
    assert not beyond, beyond


def test_instance_processes_hold_none_of_the_capabilities_a_container_drops(sandbox_box,
                                                                            machine):
    init = machines.init_pid(sandbox_box.state_dir, machine)
    assert init
    pids = [init] + [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                     and _parent(int(p.name)) == init]
    for pid in pids:
        try:
            status = dict(line.split(":\t", 1) for line in
                          Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        effective, bounding = int(status["CapEff"], 16), int(status["CapBnd"], 16)
        held = [name for name, bit in FORBIDDEN_CAPS.items()
                if (effective | bounding) & (1 << bit)]
        assert not held, f"pid {pid} ({status.get('Name', '').strip()}) holds {held}"
        assert status["Seccomp"].strip() == "2", f"pid {pid} runs without a seccomp filter"


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_every_layer_is_a_read_only_nosuid_mount_in_the_sandbox_and_none_on_the_host(
        sandbox_box, machine, probe_layer):
    pid = sandbox_box.moto.pid
    assert layer_helpers.not_frozen(pid, sandbox_box.state_dir) == []
    on_host = [point for point in layer_helpers.mounts(os.getpid())
               if point.startswith(str(sandbox_box.state_dir))]
    assert on_host == []


def test_a_setuid_file_in_a_layer_grants_nothing_to_a_process_of_the_sandbox(sandbox_box,
                                                                             probe_layer):
    """Root runs the probe (setuid to the machine's ec2-user) from the layer's path: it stays
    root, as under nosuid; with the bit honoured it would say the ec2-user's id."""
    assert layer_helpers.run_probe(sandbox_box.moto.pid, probe_layer) == "0"


def test_no_process_of_the_sandbox_writes_into_a_registered_layer_not_even_root(sandbox_box,
                                                                                probe_layer):
    said = layer_helpers.write_into(sandbox_box.moto.pid, probe_layer)
    assert said.count("Read-only file system") == 2, said
    assert not (probe_layer / "written").exists()
