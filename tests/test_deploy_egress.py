"""cloud/templates/env.yaml, kiln.deploy.egress: a server group's instances, which have no public
address, reach the AWS APIs their boot script reads user_data.secrets from.

On AWS, an instance without a public address in a subnet routed only to an internet gateway
reaches no AWS endpoint: the boot script's SSM read times out and `set -e` stops it. The
sandbox enforces the same route model (sandbox/aws/ec2/routes.py), so one instance launched
into the environment as a server group launches it (its subnet and security group, no public
address, IMDSv2 required, the environment's instance profile) shows whether the environment
gives it a way to SSM.
"""

from __future__ import annotations

import paramiko
import pytest

from tests.deploy_helpers import FAST, admin_of
from tests.secret_reader import console, user_data
from tests.test_sandbox_instances import base_image

PARAMETER = "/hello-web/db-password"


@pytest.fixture
def deploy_overrides() -> dict:
    return {"deploy": {**FAST["deploy"],
                       "user_data": {"secrets": {"DB_PASSWORD": f"ssm:{PARAMETER}"}}}}


def test_an_instance_reads_its_secret_through_the_environments_endpoints(clean_sandbox, daws,
                                                                         outputs):
    admin = admin_of(daws)
    ec2 = admin.client("ec2", daws.region)
    admin.client("ssm", daws.region).put_parameter(Name=PARAMETER, Value="correct horse",
                                                   Type="SecureString")
    key = paramiko.RSAKey.generate(2048)
    ec2.import_key_pair(KeyName="egress", PublicKeyMaterial=f"ssh-rsa {key.get_base64()}")
    instance = ec2.run_instances(
        ImageId=base_image(ec2), MinCount=1, MaxCount=1, KeyName="egress",
        UserData=user_data(clean_sandbox.endpoint, PARAMETER),
        IamInstanceProfile={"Arn": outputs["InstanceProfileArn"]},
        NetworkInterfaces=[{"DeviceIndex": 0, "AssociatePublicIpAddress": False,
                            "SubnetId": outputs["SubnetIds"].split(",")[0],
                            "Groups": [outputs["InstanceSecurityGroupId"]]}],
        MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled",
                         "HttpPutResponseHopLimit": 1})["Instances"][0]
    output = console(clean_sandbox, instance["InstanceId"])
    assert "secret: read, 13 characters" in output, output[-1500:]
    assert "boot script done" in output
