"""Images to work with in the sandbox: an instance with an encrypted root volume, then CreateImage.

Stacks stand in for the bootstrap's: `kiln-build` / `kiln-prod` with only a KMS key and its
AmiKmsKeyArn output, created by CloudFormation the way `invoke bootstrap` does.
"""

from __future__ import annotations

import json

from cloud import tags as kiln_tags

BUILD_ID = "123456789012"
PROD_ID = "222222222222"


def base_image(ec2) -> str:
    images = ec2.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["al2023-ami-2023.*-x86_64"]}])["Images"]
    return max(images, key=lambda i: i["CreationDate"])["ImageId"]


def kms_key(kms, description: str = "test ami key") -> str:
    return kms.create_key(Description=description)["KeyMetadata"]["Arn"]


def make_image(ec2, key_arn: str | None, app: str = "hello-web", version: str = "1.4.2",
               role: str = "image", run_id: str = "20250101T000000-abcdef", **extra) -> str:
    """RunInstances with an encrypted root volume, then CreateImage; the instance is terminated."""
    ebs = {"VolumeSize": 8, "Encrypted": True, "DeleteOnTermination": True}
    if key_arn:
        ebs["KmsKeyId"] = key_arn
    instance = ec2.run_instances(
        ImageId=base_image(ec2), MinCount=1, MaxCount=1, InstanceType="t3.small",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": ebs}])["Instances"][0]
    tags = kiln_tags.kiln_tags(app, role, run_id=run_id, version=version, **extra)
    image = ec2.create_image(InstanceId=instance["InstanceId"], Name=f"{app}-{version}-{run_id}",
                             TagSpecifications=[kiln_tags.spec("image", tags)])["ImageId"]
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    return image


KEY_STACK = {
    "Resources": {
        "AmiKey": {"Type": "AWS::KMS::Key",
                   "Properties": {"Description": "Kiln AMI key",
                                  "KeyPolicy": json.dumps({"Version": "2012-10-17",
                                                           "Statement": []})}},
    },
    "Outputs": {"AmiKmsKeyArn": {"Value": {"Fn::GetAtt": ["AmiKey", "Arn"]}}},
}


def key_stack(cloudformation, name: str) -> str:
    """A stack named like the bootstrap's with just the AMI key; returns the key ARN."""
    cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(KEY_STACK))
    outputs = cloudformation.describe_stacks(StackName=name)["Stacks"][0]["Outputs"]
    return {o["OutputKey"]: o["OutputValue"] for o in outputs}["AmiKmsKeyArn"]
