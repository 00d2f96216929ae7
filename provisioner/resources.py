"""The bake's temporary AWS resources, one context manager each.

Each manager creates its resource (tagged at creation, inside `signals.shielded()` so a signal
cannot land between "created" and "id known"), yields it, and releases it on any exit. A release
that fails is reported in one line and left to the janitor (it carries kiln:expires-at); it never
hides the error that caused the unwinding.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from cloud import tags as kiln_tags
from cloud.aws import Aws
from cloud.console import say
from provisioner import signals, waits
from provisioner.images import delete_snapshot
from provisioner.signals import check, shielded

# Codes that mean "already gone": releasing twice is not an error.
GONE = {"InvalidKeyPair.NotFound", "InvalidGroup.NotFound", "InvalidInstanceID.NotFound",
        "InvalidAMIID.NotFound", "InvalidAMIID.Unavailable", "InvalidSnapshot.NotFound"}


@dataclass
class KeyPair:
    name: str
    id: str
    private_key: str


@contextmanager
def key_pair(aws: Aws, name: str, tags: dict[str, str], key_type: str = "ed25519"):
    """A fresh key pair whose private key lives only in this process's memory."""
    ec2 = aws.client("ec2")
    made = None
    try:
        with shielded():
            made = _create_key_pair(ec2, name, key_type, tags)
        check()
        say(f"bake: created key pair {name} ({made['KeyPairId']})")
        yield KeyPair(name, made["KeyPairId"], made["KeyMaterial"])
    finally:
        if made:
            _release(f"key pair {name}", ec2.delete_key_pair, KeyName=name)


@contextmanager
def security_group(aws: Aws, name: str, vpc_id: str, cidrs: list[str], port: int,
                   tags: dict[str, str], dependency_timeout: int = 300):
    """A group that lets SSH in from `cidrs` only; deleted once nothing uses it any more."""
    ec2 = aws.client("ec2")
    group_id = None
    try:
        with shielded():
            group_id = _create_group(ec2, name, vpc_id, cidrs, tags)
        check()
        say(f"bake: created security group {name} ({group_id}), SSH from {', '.join(cidrs)}")
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[{
            "IpProtocol": "tcp", "FromPort": port, "ToPort": port,
            "IpRanges": [{"CidrIp": c, "Description": "Kiln bake SSH"} for c in cidrs]}])
        yield group_id
    finally:
        if group_id:
            _release(f"security group {group_id}", _delete_group, ec2, group_id,
                     dependency_timeout)


def _create_key_pair(ec2, name: str, key_type: str, tags: dict[str, str]) -> dict:
    """CreateKeyPair; a retry whose first attempt landed (its answer lost) meets a Duplicate.
    The name is this run's own, but the private key was only in that lost answer: the key pair
    is deleted and made again."""
    create = {"KeyName": name, "KeyType": key_type,
              "TagSpecifications": [kiln_tags.spec("key-pair", tags)]}
    try:
        return ec2.create_key_pair(**create)
    except ClientError as error:
        if _code(error) != "InvalidKeyPair.Duplicate" or not _ours(
                ec2.describe_key_pairs(KeyNames=[name])["KeyPairs"][0], tags):
            raise
    say(f"bake: key pair {name} was made by a retried call whose answer was lost; making it again")
    ec2.delete_key_pair(KeyName=name)
    return ec2.create_key_pair(**create)


def _create_group(ec2, name: str, vpc_id: str, cidrs: list[str], tags: dict[str, str]) -> str:
    """CreateSecurityGroup (no idempotency token in EC2's API): a Duplicate of this run's own
    group, made by a retried call whose answer was lost, is adopted."""
    try:
        return ec2.create_security_group(
            GroupName=name, VpcId=vpc_id, TagSpecifications=[
                kiln_tags.spec("security-group", tags)],
            Description=f"Kiln bake {tags.get(kiln_tags.RUN_ID)}: SSH from "
                        f"{', '.join(cidrs)}")["GroupId"]
    except ClientError as error:
        if _code(error) != "InvalidGroup.Duplicate":
            raise
        found = ec2.describe_security_groups(Filters=[
            {"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}]
        )["SecurityGroups"]
        if not found or not _ours(found[0], tags):
            raise
    say(f"bake: security group {name} was made by a retried call whose answer was lost; "
        f"using it")
    return found[0]["GroupId"]


def _ours(resource: dict, tags: dict[str, str]) -> bool:
    """Made by this run: its run id tag is ours."""
    return kiln_tags.from_list(resource.get("Tags")).get(kiln_tags.RUN_ID) == \
        tags.get(kiln_tags.RUN_ID)


@contextmanager
def instance(aws: Aws, params: dict):
    """One instance from RunInstances `params`; terminated on exit."""
    ec2 = aws.client("ec2")
    instance_id = None

    def launch() -> str:
        with shielded():
            return ec2.run_instances(**params)["Instances"][0]["InstanceId"]

    try:
        # A new instance profile (the build stack just made) is unknown to EC2 for a few seconds.
        instance_id = retry(retry=retry_if_exception(_profile_not_ready), reraise=True,
                            stop=stop_after_delay(120), wait=wait_exponential(1, max=10))(launch)()
        check()
        say(f"bake: launched instance {instance_id} ({params['InstanceType']}, "
            f"{params['ImageId']})")
        yield instance_id
    finally:
        if instance_id:
            _release(f"instance {instance_id}", _terminate, aws, instance_id)


def _delete_group(ec2, group_id: str, dependency_timeout: int) -> None:
    # The instance's network interface can hold the group for a while after termination.
    retry(retry=retry_if_exception(_dependency_violation), reraise=True,
          stop=stop_after_delay(dependency_timeout),
          wait=wait_exponential(1, max=15))(ec2.delete_security_group)(GroupId=group_id)


def _terminate(aws: Aws, instance_id: str) -> None:
    # No wait for `terminated`: the security group's release retries while the instance goes.
    state = aws.client("ec2").terminate_instances(InstanceIds=[instance_id])[
        "TerminatingInstances"][0]["CurrentState"]["Name"]
    say(f"bake: terminating instance {instance_id} ({state})")


@contextmanager
def image(aws: Aws, instance_id: str, name: str, description: str, tags: dict[str, str],
          snapshot_tags: dict[str, str]):
    """CreateImage from the stopped instance, image and snapshots tagged at creation;
    deregistered with its snapshots unless the block completes, so a failed or interrupted bake
    leaves no image behind."""
    ec2 = aws.client("ec2")
    image_id = None
    try:
        with shielded():
            image_id = ec2.create_image(
                InstanceId=instance_id, Name=name, Description=description,
                TagSpecifications=[kiln_tags.spec("image", tags),
                                   kiln_tags.spec("snapshot", snapshot_tags)])["ImageId"]
        check()
        say(f"bake: creating image {image_id} ({name})")
        yield image_id
    except BaseException:
        if image_id:
            _release(f"image {image_id}", deregister, aws, image_id)
        raise


def deregister(aws: Aws, image_id: str) -> None:
    """Deregister an image and delete its snapshots (an AMI never leaves orphaned snapshots)."""
    ec2 = aws.client("ec2")
    try:
        images = ec2.describe_images(ImageIds=[image_id])["Images"]
    except ClientError as error:
        if _code(error) not in GONE:
            raise
        images = []
    snapshots = [m["Ebs"]["SnapshotId"] for i in images for m in i.get("BlockDeviceMappings", [])
                 if m.get("Ebs", {}).get("SnapshotId")]
    ec2.deregister_image(ImageId=image_id)
    for snapshot in snapshots:
        _release(f"snapshot {snapshot}", delete_snapshot, ec2, snapshot)
    say(f"bake: deregistered image {image_id} and {len(snapshots)} snapshot(s)")


def _release(what: str, action, *args, **kwargs) -> None:
    signals.defer()  # a signal between this release and the next waits for both
    with shielded():
        try:
            action(*args, **kwargs)
            if not what.startswith(("instance", "image", "snapshot")):  # those say it themselves
                say(f"bake: deleted {what}")
        except ClientError as error:
            if _code(error) in GONE:
                return
            say(f"bake: could not release {what}: {error}; the janitor will remove it by tag")
        except (BotoCoreError, waits.WaitError) as error:
            say(f"bake: could not release {what}: {error}; the janitor will remove it by tag")


def _profile_not_ready(error: BaseException) -> bool:
    return isinstance(error, ClientError) and _code(error) == "InvalidParameterValue" and \
        "iamInstanceProfile" in error.response.get("Error", {}).get("Message", "")


def _dependency_violation(error: BaseException) -> bool:
    return isinstance(error, ClientError) and _code(error) == "DependencyViolation"


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")
