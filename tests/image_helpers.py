"""Images to work with in the sandbox: an instance with an encrypted root volume, then CreateImage;
and the AMI keys they are encrypted with, from the real bootstrap stacks.
"""

from __future__ import annotations

import contextlib

from botocore.exceptions import ClientError
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from accounts import bootstrap as kiln_bootstrap
from cloud import tags as kiln_tags
from cloud.aws import Aws
from cloud.target import connect

BUILD_ID = "123456789012"
PROD_ID = "222222222222"


def base_image(ec2) -> str:
    images = ec2.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["al2023-ami-2023.*-x86_64"]}])["Images"]
    return max(images, key=lambda i: i["CreationDate"])["ImageId"]


def kms_key(kms, description: str = "test ami key") -> str:
    """A key named as bootstrap names the AMI key (alias/kiln-ami, where the account and region
    has none yet): the operator's policy lets it use only keys of that alias
    (kms:ResourceAliases), as on AWS."""
    arn = kms.create_key(Description=description)["KeyMetadata"]["Arn"]
    with contextlib.suppress(kms.exceptions.AlreadyExistsException):
        kms.create_alias(AliasName="alias/kiln-ami", TargetKeyId=arn)
    return arn


def make_image(ec2, key_arn: str | None, app: str = "hello-web", version: str = "1.4.2",
               role: str = "image", run_id: str = "20250101T000000-abcdef", **extra) -> str:
    """RunInstances with an encrypted root volume, then CreateImage, image and snapshots tagged
    as the bake tags them; the instance is terminated."""
    ebs = {"VolumeSize": 8, "Encrypted": True, "DeleteOnTermination": True}
    if key_arn:
        ebs["KmsKeyId"] = key_arn
    instance = ec2.run_instances(
        ImageId=base_image(ec2), MinCount=1, MaxCount=1, InstanceType="t3.small",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": ebs}])["Instances"][0]
    tags = kiln_tags.kiln_tags(app, role, run_id=run_id, version=version, **extra)
    image = ec2.create_image(InstanceId=instance["InstanceId"], Name=f"{app}-{version}-{run_id}",
                             TagSpecifications=[kiln_tags.spec("image", tags),
                                                kiln_tags.spec("snapshot", tags)])["ImageId"]
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    available(ec2, image)
    return image


def available(ec2, image_id: str) -> None:
    """Wait as a bake does: a new image is not visible at once, then pending for a while."""
    retry(retry=retry_if_exception_type(ClientError), stop=stop_after_delay(30),
          wait=wait_fixed(0.05), reraise=True)(ec2.describe_images)(ImageIds=[image_id])
    ec2.get_waiter("image_available").wait(ImageIds=[image_id],
                                           WaiterConfig={"Delay": 0.05, "MaxAttempts": 600})


# The stacks holding the AMI keys: kiln-build, kiln-prod, and kiln-keys in every copy region.
KEY_PARTS = ("build", "prod", "keys")


def bootstrapped(kiln_settings, copy_regions=(), **bake) -> Aws:
    """`invoke bootstrap --yes` of the stacks that hold the AMI keys, with kiln.bake.copy_regions
    `copy_regions` (and other kiln.bake settings); a build account session with those settings."""
    settings = kiln_settings(bake={"copy_regions": list(copy_regions), **bake})
    admin = connect(settings, admin=True)
    kiln_bootstrap.run(admin.settings, admin, yes=True, parts=KEY_PARTS)
    return connect(settings)
