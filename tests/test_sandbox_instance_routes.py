"""sandbox/aws/ec2/routes.py, sandbox/machines/metadata.py and aws_names.py: an instance reaches
AWS's APIs by their names, only over a route its VPC gives it, with its instance profile's
credentials from IMDSv2, as the AWS CLI on an Amazon Linux 2023 instance does.

One machine in a subnet whose route table sends 0.0.0.0/0 to an internet gateway, but without a
public address (as a server group's instances are): Kiln's boot script (kiln.deploy.user_data
with a `secrets` entry) reads an SSM SecureString with `aws ssm get-parameter` and fails, for
want of a route; once its VPC has an interface endpoint of SSM with private DNS, the same
command reads it, and a parameter the role may not read is AccessDenied.
"""

from __future__ import annotations

import json
import os
import subprocess
from unittest import mock

import boto3
import paramiko
import pytest

from cloud.settings import Settings
from cloud.target import connect
from orchestrator import groups
from sandbox import listener_cert
from sandbox.machines import aws_names, forward
from sandbox.machines import instances as machines
from sandbox.network import client
from tests.cloud_init_helpers import console
from tests.test_sandbox_instances import base_image

PARAMETER = "/routes/db-password"
ENV_FILE = "/etc/kiln/environment"
# Token requests IMDSv2 refuses, and a read with a token it never gave.
REFUSALS = r'''
import urllib.error, urllib.request
def status(method, path, headers):
    request = urllib.request.Request("http://169.254.169.254" + path, method=method,
                                     headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=2).status
    except urllib.error.HTTPError as error:
        return error.code
ttl = "X-aws-ec2-metadata-token-ttl-seconds"
print(status("PUT", "/latest/api/token", {}),
      status("PUT", "/latest/api/token", {ttl: "21601"}),
      status("PUT", "/latest/api/token", {ttl: "60", "X-Forwarded-For": "203.0.113.9"}),
      status("GET", "/latest/meta-data/", {"X-aws-ec2-metadata-token": "made-up"}))
'''


def boot_script() -> str:
    """Kiln's boot script for a group whose user data names one SSM secret."""
    settings = Settings(env_file=ENV_FILE, environment={}, command="echo boot script done",
                        secrets={"DB_PASSWORD": f"ssm:{PARAMETER}"})
    return groups.boot_script(settings, {"KILN_APP": "routes"}, None, "us-east-1")


def run(box, instance_id: str, *command: str) -> subprocess.CompletedProcess:
    """`command` run in the instance as ec2-user."""
    return subprocess.run([*machines.enter_command(box.state_dir, instance_id), *command],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def private_instance(clean_sandbox):
    """A running machine in a subnet routed to an internet gateway, with no public address."""
    ec2, iam = boto3.client("ec2"), boto3.client("iam")
    boto3.client("ssm").put_parameter(Name=PARAMETER, Value="s3cr3t-value",
                                      Type="SecureString")
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
        "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName="reader", AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName="reader", PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ssm:GetParameter",
             "Resource": f"arn:aws:ssm:us-east-1:*:parameter{PARAMETER}"},
            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"},
            # The instance's calls reach the sandbox over TLS, as they reach AWS.
            {"Effect": "Deny", "Action": "*", "Resource": "*",
             "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}))
    iam.create_instance_profile(InstanceProfileName="reader")
    iam.add_role_to_instance_profile(InstanceProfileName="reader", RoleName="reader")
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24")["Subnet"]["SubnetId"]
    gateway = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=gateway, VpcId=vpc)
    table = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])[
        "RouteTables"][0]["RouteTableId"]
    ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway)
    key = paramiko.RSAKey.generate(2048)
    ec2.import_key_pair(KeyName="routes", PublicKeyMaterial=f"ssh-rsa {key.get_base64()}")
    instance = ec2.run_instances(
        ImageId=base_image(ec2), MinCount=1, MaxCount=1, KeyName="routes",
        UserData=boot_script(),
        IamInstanceProfile={"Name": "reader"},
        NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnet,
                            "AssociatePublicIpAddress": False}],
        MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"})["Instances"][0]
    assert "PublicIpAddress" not in instance
    return {"id": instance["InstanceId"], "vpc": vpc, "subnet": subnet, "ec2": ec2}


def test_a_secret_is_read_only_over_a_route_the_vpc_gives(clean_sandbox, private_instance):
    instance_id, ec2 = private_instance["id"], private_instance["ec2"]
    output = console(clean_sandbox, instance_id)
    # No public address, no NAT, no endpoint: the CLI's read fails and set -e stops the script.
    # (On AWS the connection times out; here it is closed unanswered, sandbox/machines/forward.py.)
    assert 'endpoint URL: "https://ssm.us-east-1.amazonaws.com/"' in output, output[-1500:]
    assert "boot script done" not in output and "script part-001 failed" in output
    forwarded = machines.instance_dir(clean_sandbox.state_dir, instance_id) / "forward.log"
    assert "no route to ssm's endpoint" in forwarded.read_text()

    ec2.create_vpc_endpoint(VpcId=private_instance["vpc"], VpcEndpointType="Interface",
                            ServiceName="com.amazonaws.us-east-1.ssm",
                            SubnetIds=[private_instance["subnet"]], PrivateDnsEnabled=True)
    read = ["aws", "--region", "us-east-1", "ssm", "get-parameter", "--with-decryption",
            "--query", "Parameter.Value", "--output", "text", "--name"]
    again = run(clean_sandbox, instance_id, *read, PARAMETER)
    assert again.returncode == 0, again.stderr[-1000:]
    assert again.stdout.strip() == "s3cr3t-value"
    # The role's policy names one parameter: another is refused by IAM, as on AWS.
    boto3.client("ssm").put_parameter(Name="/routes/other", Value="x", Type="SecureString")
    denied = run(clean_sandbox, instance_id, *read, "/routes/other")
    assert denied.returncode != 0
    assert "AccessDeniedException" in denied.stderr and "assumed-role/reader/" in denied.stderr
    # Secrets Manager has no endpoint in this VPC: still no route.
    other = run(clean_sandbox, instance_id, "aws", "--region", "us-east-1", "secretsmanager",
                "get-secret-value", "--secret-id", "x")
    assert other.returncode != 0 and "secretsmanager.us-east-1.amazonaws.com" in other.stderr
    assert "no route to secretsmanager's endpoint" in forwarded.read_text()

    refusals = run(clean_sandbox, instance_id, "python3", "-c", REFUSALS)
    assert refusals.stdout.split() == ["400", "400", "403", "401"], refusals.stderr[-500:]


@pytest.fixture
def listeners_ca(clean_sandbox, kiln_settings) -> str:
    """The sandbox CA of the listeners' certificates, made as any Kiln run against the sandbox
    makes it (before the instance boots, as on AWS the public CAs are there before any AMI)."""
    connect(kiln_settings())
    return listener_cert.files(clean_sandbox.state_dir)["ca"].read_text()


def test_an_instance_trusts_the_ca_of_the_listeners_certificates(clean_sandbox, listeners_ca,
                                                                  private_instance):
    """As an AMI trusts the public CAs that sign ACM's certificates, a sandbox machine's system
    bundle holds the sandbox CA that signs the load balancers' certificates (a build's acceptance
    command checks the candidate's TLS with it), beside the CA of AWS's names."""
    console(clean_sandbox, private_instance["id"])  # booted
    bundle = run(clean_sandbox, private_instance["id"], "cat", aws_names.system_bundle())
    assert listeners_ca.strip() in bundle.stdout, bundle.stderr[-500:]
    assert aws_names.files(clean_sandbox.state_dir)["ca"].read_text().strip() in bundle.stdout
    in_build = {"CODEBUILD_BUILD_ARN": "arn:aws:codebuild:us-east-1:123456789012:build/x:1",
                "AWS_ENDPOINT_URL": "https://127.0.0.1:5000", "KILN_SANDBOX_TIME_SCALE": "1"}
    with mock.patch.dict(os.environ, in_build):
        handed = client.environment("/nowhere", "https://127.0.0.9:443/", "hello-web")
    assert handed["KILN_CA_BUNDLE"] == aws_names.system_bundle() == handed["SSL_CERT_FILE"]


def test_a_requests_service_is_its_credential_scopes():
    signed = (b"POST / HTTP/1.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/"
              b"20261207/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, "
              b"Signature=abc\r\n\r\n")
    presigned = (b"GET /repo/x.rpm?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEX"
                 b"%2F20261207%2Fus-east-1%2Fs3%2Faws4_request HTTP/1.1\r\n\r\n")
    assert forward.service_of(signed) == "secretsmanager"
    assert forward.service_of(presigned) == "s3"
    assert forward.service_of(b"GET /repo/repodata/repomd.xml HTTP/1.1\r\n\r\n") == "s3"
