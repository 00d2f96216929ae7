"""No local user reaches into a sandbox machine from the host: not through an image's layers
(their setuid files, their world-writable /var/tmp), not through an instance's writable layer
(a bake's staging dir in ec2-user's home), whatever the modes inside them."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from sandbox.machines import image, images
from sandbox.machines import instances as machines

INSTANCE = "i-0000000000000150"
NOBODY = 65534
EC2_USER = image.EC2_USER[1]  # the host's uid of the same number: a person, on most hosts


def as_user(uid: int, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           "sh", "-c", command], capture_output=True, text=True, timeout=30)


@pytest.fixture
def state():
    """A state dir every local user can reach (a checkout's .sandbox, say)."""
    if os.geteuid() != 0:
        pytest.skip("running as other users needs root")  # CI runs as root
    folder = Path(tempfile.mkdtemp(prefix="kiln-state-", dir="/var/tmp"))
    folder.chmod(0o755)
    yield folder
    machines.terminate_all(folder)
    subprocess.run(["rm", "-rf", "--", str(folder)], check=False)


def test_no_local_user_reaches_an_images_layers_or_an_instances_own(state):
    machines.launch(state, INSTANCE, "10.0.0.9")
    enter = machines.enter_command(state, INSTANCE)
    # What an app's package may do (a setuid file), and what every bake does (its staging dir).
    made = subprocess.run([*enter, "sh", "-c",
                           "sudo -n install -m 4755 /usr/bin/id /usr/local/bin/kiln-id && "
                           "sudo -n touch /var/tmp/kiln-scratch && mkdir ~/kiln-bake"],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    [top] = images.capture(state, "ami-0000000000000150", INSTANCE,
                           machines.upper(state, INSTANCE))
    layer = images.layers_dir(state) / top
    assert (layer / "usr/local/bin/kiln-id").stat().st_mode & 0o4000
    machines_dir = state / "machines"
    assert {oct(path.stat().st_mode & 0o777) for path in (
        machines_dir, images.layers_dir(state), layer, image.layer_dir(state))} == {"0o700"}
    # A setuid file of a layer runs as root for nobody on the host.
    ran = as_user(NOBODY, f"{layer}/usr/local/bin/kiln-id -u")
    assert ran.returncode != 0 and ran.stdout.strip() != "0"
    # The layers' world-writable /var/tmp is every instance's of the image.
    for var_tmp in (layer / "var/tmp", image.layer_dir(state) / "var/tmp"):
        assert as_user(NOBODY, f"touch {var_tmp}/from-the-host").returncode != 0
    # The host's user of ec2-user's uid does not write into a bake's staging dir.
    staging = machines.upper(state, INSTANCE) / "home/ec2-user/kiln-bake"
    assert staging.is_dir()
    assert as_user(EC2_USER, f"echo 'execute \"id\"' >> {staging}/recipe.rb").returncode != 0
    assert not (staging / "recipe.rb").exists()
