"""sandbox/patches/machine_images.py: images hold the machine's filesystem, copies share it."""

import boto3

from sandbox.machines import images
from tests.test_sandbox_instances import BAKE_KEY_TAGS, connect, launch, out


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

    pem2 = ec2.create_key_pair(KeyName="runner2", TagSpecifications=BAKE_KEY_TAGS)["KeyMaterial"]
    second = ec2.run_instances(ImageId=copy, MinCount=1, MaxCount=1,
                               KeyName="runner2")["Instances"][0]
    with connect(clean_sandbox, second, pem2) as ssh:
        assert out(ssh, "cat /etc/kiln-marker") == "baked"

    ec2.deregister_image(ImageId=image)
    assert layers[0].is_dir()  # the copy still uses it
    ec2.deregister_image(ImageId=copy)
    assert not layers[0].exists()
