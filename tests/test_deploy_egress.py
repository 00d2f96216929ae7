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

from orchestrator import groups, operations
from sandbox.machines import instances as machines
from tests.cloud_init_helpers import console
from tests.deploy_helpers import FAST, admin_of, asg_instances, make_image
from tests.test_sandbox_instances import base_image

PARAMETER = "/hello-web/db-password"
SECRET = "hello-web/api-token"


@pytest.fixture
def deploy_overrides(request) -> dict:
    """The secret to read; kiln.deploy.egress as a test's parameter says (default endpoints)."""
    return {"deploy": {**FAST["deploy"], "egress": getattr(request, "param", "endpoints"),
                       "user_data": {"secrets": {"DB_PASSWORD": f"ssm:{PARAMETER}",
                                                 "API_TOKEN": f"secretsmanager:{SECRET}"}}}}


def test_an_instance_reads_its_secret_through_the_environments_endpoints(clean_sandbox, daws,
                                                                         outputs):
    admin = admin_of(daws)
    ec2 = admin.client("ec2", daws.region)
    admin.client("secretsmanager", daws.region).create_secret(Name=SECRET,
                                                              SecretString="battery-staple")
    admin.client("ssm", daws.region).put_parameter(Name=PARAMETER, Value="correct horse",
                                                   Type="SecureString")
    key = paramiko.RSAKey.generate(2048)
    ec2.import_key_pair(KeyName="egress", PublicKeyMaterial=f"ssh-rsa {key.get_base64()}")
    instance = ec2.run_instances(
        ImageId=base_image(ec2), MinCount=1, MaxCount=1, KeyName="egress",
        UserData=groups.boot_script(daws.settings.deploy.user_data, {"KILN_APP": "hello-web"},
                                    None, daws.region),
        IamInstanceProfile={"Arn": outputs["InstanceProfileArn"]},
        NetworkInterfaces=[{"DeviceIndex": 0, "AssociatePublicIpAddress": False,
                            "SubnetId": outputs["SubnetIds"].split(",")[0],
                            "Groups": [outputs["InstanceSecurityGroupId"]]}],
        MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled",
                         "HttpPutResponseHopLimit": 1})["Instances"][0]
    output = console(clean_sandbox, instance["InstanceId"])
    assert "failed" not in output, output[-1500:]
    # Kiln's boot script wrote the secret its `aws ssm get-parameter` read into the env file.
    written = machines.upper(clean_sandbox.state_dir, instance["InstanceId"]) / \
        daws.settings.deploy.user_data.env_file.lstrip("/")
    assert "DB_PASSWORD=correct\\ horse\nAPI_TOKEN=battery-staple\n" in written.read_text()


@pytest.mark.parametrize("deploy_overrides", ["nat", "public"], indirect=True)
def test_a_deploy_gets_the_route_its_egress_setting_names(kaws, daws, outputs):
    egress = daws.settings.deploy.egress
    make_image(daws, "1.0.0")
    operations.deploy(kaws, version="1.0.0")
    ec2 = daws.client("ec2")
    instances = [i for r in ec2.describe_instances(
        InstanceIds=asg_instances(daws, "hello-web-v001"))["Reservations"] for i in r["Instances"]]
    assert instances and all(i["SubnetId"] in outputs["SubnetIds"] for i in instances)
    routes = {}
    for table in admin_of(daws).client("ec2", daws.region).describe_route_tables()[
            "RouteTables"]:
        for association in table["Associations"]:
            routes[association.get("SubnetId")] = {
                r.get("DestinationCidrBlock"): r.get("NatGatewayId") or r.get("GatewayId")
                for r in table["Routes"]}
    for instance in instances:
        default = routes[instance["SubnetId"]]["0.0.0.0/0"]
        if egress == "nat":  # private subnets, out through the NAT gateway
            assert default.startswith("nat-") and "PublicIpAddress" not in instance
        else:  # the public subnets, and an address of their own
            assert default.startswith("igw-") and "PublicIpAddress" in instance

