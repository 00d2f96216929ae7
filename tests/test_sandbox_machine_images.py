"""sandbox/aws/ec2/machine_images.py: images hold the machine's filesystem, copies share it."""

import os
import subprocess
from pathlib import Path

import boto3

from sandbox.machines import images
from sandbox.machines import instances as machines
from tests.test_sandbox_instances import BAKE_KEY_TAGS, connect, launch, out, ssh_group


def _launch_from(ec2, image: str, key: str) -> tuple[dict, str]:
    """An instance of `image` this host may SSH into, and its key."""
    pem = ec2.create_key_pair(KeyName=key, TagSpecifications=BAKE_KEY_TAGS)["KeyMaterial"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName=key,
                                 SecurityGroupIds=[ssh_group(ec2)])["Instances"][0]
    return instance, pem


def test_an_image_holds_the_instance_and_copies_share_its_layer(clean_sandbox):
    ec2 = boto3.client("ec2")
    state = clean_sandbox.state_dir
    instance, pem = launch(ec2, key_name="baker")
    with connect(clean_sandbox, instance, pem) as ssh:
        ssh.run("echo baked | sudo -n tee /etc/kiln-marker >/dev/null", hide=True)
    image = ec2.create_image(InstanceId=instance["InstanceId"], Name="marked")["ImageId"]
    copy = ec2.copy_image(SourceImageId=image, SourceRegion="us-east-1", Name="copy")["ImageId"]
    layers = images.stack(state, image)
    assert layers == images.stack(state, copy) and len(layers) == 1
    assert (layers[0] / "etc" / "kiln-marker").read_text() == "baked\n"
    usage = {u["image"]: u for u in images.usage(state)}
    assert usage[image]["bytes"] == usage[copy]["bytes"] > 0
    assert usage[image]["own_bytes"] == 0  # shared with the copy, held once on disk

    second, pem2 = _launch_from(ec2, copy, "runner2")
    with connect(clean_sandbox, second, pem2) as ssh:
        assert out(ssh, "cat /etc/kiln-marker") == "baked"

    ec2.deregister_image(ImageId=image)
    assert layers[0].is_dir()  # the copy still uses it
    ec2.deregister_image(ImageId=copy)
    assert not layers[0].exists()


def test_instances_stack_the_image_where_it_lies_and_keep_what_they_write(clean_sandbox):
    """An image's layer is shared by its instances on disk, not copied into each one's memory,
    and what an instance writes anywhere (top level, a system folder, a removal of a file the
    host provides) is in the image made of it."""
    ec2 = boto3.client("ec2")
    state = clean_sandbox.state_dir
    instance, pem = launch(ec2, key_name="baker")
    with connect(clean_sandbox, instance, pem) as ssh:
        ssh.run("sudo -n mkdir /data && echo top | sudo -n tee /data/file >/dev/null"
                " && echo tool | sudo -n tee /usr/local/bin/kiln-tool >/dev/null"
                " && sudo -n rm /usr/bin/yes", hide=True)
    image = ec2.create_image(InstanceId=instance["InstanceId"], Name="written")["ImageId"]
    [layer] = images.stack(state, image)
    assert os.stat(layer / "usr" / "bin" / "yes").st_rdev == 0  # a whiteout
    assert Path("/usr/bin/yes").is_file()  # the host's is untouched

    second, pem2 = _launch_from(ec2, image, "runner")
    with connect(clean_sandbox, second, pem2) as ssh:
        assert out(ssh, "cat /data/file /usr/local/bin/kiln-tool") == "top\ntool"
        assert ssh.run("test -e /usr/bin/yes", warn=True, hide=True).failed
    init = machines.init_pid(state, second["InstanceId"])
    lowers = [option.split("=", 1)[1].split(":")
              for line in Path(f"/proc/{init}/mountinfo").read_text().splitlines()
              if " - overlay " in line
              for option in line.split(" - overlay ", 1)[1].split(" ", 2)[-1].split(",")
              if option.startswith("lowerdir=")]
    assert [str(layer)] in [group[:1] for group in lowers]
    assert [str(layer / "usr")] in [group[:1] for group in lowers]
    world = str(machines.instance_dir(state, second["InstanceId"]))
    # Of the instance's own folder, only the skeleton of the root's top level is a lower layer.
    assert {path for group in lowers for path in group if path.startswith(world)} == \
        {f"{world}/scratch/skeleton"}


def test_a_state_dir_inside_a_system_folder_still_boots_and_stays_hidden(var_tmp_state):
    """A sandbox whose state lies under the host's /var (a Jenkins workspace, say): the
    instance's /var is its layers' (the image's, never the host's), so its layers stack in place
    and the state is not visible inside."""
    state = var_tmp_state
    layer = state / "machines" / "layers" / "layer-test"
    (layer / "var" / "lib" / "app").mkdir(parents=True)
    (layer / "var" / "lib" / "app" / "data").write_text("kept\n")
    (layer / "opt" / "app").mkdir(parents=True)
    (layer / "opt" / "app" / "run").write_text("run\n")
    machines.launch(state, "i-0123456789abcdef0", "10.0.0.5", layers=[layer])
    enter = machines.enter_command(state, "i-0123456789abcdef0")
    shown = subprocess.run([*enter, "sh", "-c", f"cat /var/lib/app/data /opt/app/run; "
                            f"ls -A {state} | wc -l"],
                           capture_output=True, text=True, timeout=30)
    assert shown.stdout.split() == ["kept", "run", "0"], shown.stderr


def test_only_a_chef_installation_outside_the_system_folders_is_bound_and_never_the_root():
    bound = machines._binds  # the host folders every instance shows read-only
    assert bound("/work/vendor/chef/bin/chef-solo") == ["/work/vendor/chef"]
    # /opt is the image's, not the host's: the host's Chef there is bound, and only it.
    assert bound("/opt/chef/bin/chef-solo") == ["/opt/chef"]
    assert bound("/usr/bin/chef-solo") == []  # /usr is the host's already
    assert bound("/chef-bin/chef-solo") == [] and bound("/chef-solo") == []  # a prefix of /
    assert bound(None) == []
