"""sandbox/aws/ec2/routes.py and sandbox/machines/metadata.py: an instance reaches AWS's APIs only
over a route its VPC gives it, with its instance profile's credentials from IMDSv2.

One machine in a subnet whose route table sends 0.0.0.0/0 to an internet gateway, but without a
public address (as a server group's instances are): its user data reads an SSM SecureString
with the role's credentials and fails, for want of a route; once its VPC has an interface
endpoint of SSM with private DNS, the same reader succeeds.
"""

from __future__ import annotations

import json
import subprocess
import time

import boto3
import paramiko
import pytest

from sandbox.machines import instances as machines
from tests.test_sandbox_instances import base_image

PARAMETER = "/routes/db-password"
# Python's standard library only, as a boot script on a bare instance might: IMDSv2 for the
# role's credentials, then SSM's GetParameter signed with them (SigV4).
READER = r'''
import datetime, hashlib, hmac, json, sys, urllib.error, urllib.request

IMDS = "http://169.254.169.254"


def imds(path, token=None):
    headers = {"X-aws-ec2-metadata-token": token} if token else {}
    return urllib.request.urlopen(urllib.request.Request(IMDS + path, headers=headers),
                                  timeout=2).read().decode()


token = urllib.request.urlopen(urllib.request.Request(
    IMDS + "/latest/api/token", method="PUT",
    headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"}), timeout=2).read().decode()
try:
    imds("/latest/meta-data/instance-id")
    print("imds: read without a token")
except urllib.error.HTTPError as error:
    print("imds: without a token", error.code)
print("imds: instance", imds("/latest/meta-data/instance-id", token))
role = imds("/latest/meta-data/iam/security-credentials/", token).strip()
keys = json.loads(imds("/latest/meta-data/iam/security-credentials/" + role, token))
region = imds("/latest/meta-data/placement/region", token)
print("imds: role", role, keys["Code"], keys["AccessKeyId"][:4])
endpoint, name = sys.argv[1], sys.argv[2]
body = json.dumps({"Name": name, "WithDecryption": True}).encode()
stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
headers = {"content-type": "application/x-amz-json-1.1", "host": endpoint.split("//")[1],
           "x-amz-date": stamp, "x-amz-security-token": keys["Token"],
           "x-amz-target": "AmazonSSM.GetParameter"}
signed = ";".join(sorted(headers))
canonical = "\n".join(["POST", "/", "", *(k + ":" + headers[k] for k in sorted(headers)), "",
                       signed, hashlib.sha256(body).hexdigest()])
scope = stamp[:8] + "/" + region + "/ssm/aws4_request"
text = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                  hashlib.sha256(canonical.encode()).hexdigest()])
key = ("AWS4" + keys["SecretAccessKey"]).encode()
for part in (stamp[:8], region, "ssm", "aws4_request"):
    key = hmac.new(key, part.encode(), hashlib.sha256).digest()
headers["authorization"] = ("AWS4-HMAC-SHA256 Credential=" + keys["AccessKeyId"] + "/" + scope
                            + ", SignedHeaders=" + signed + ", Signature="
                            + hmac.new(key, text.encode(), hashlib.sha256).hexdigest())
request = urllib.request.Request(endpoint + "/", data=body, headers=headers, method="POST")
value = json.loads(urllib.request.urlopen(request, timeout=10).read())["Parameter"]["Value"]
print("secret: read,", len(value), "characters")
'''


def user_data(endpoint: str) -> str:
    return ("#!/bin/bash\nset -euo pipefail\n"
            "cat > /usr/local/bin/read-secret <<'KILN_READER'\n" + READER + "KILN_READER\n"
            f"python3 /usr/local/bin/read-secret {endpoint} {PARAMETER}\n"
            "echo boot script done\n")


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
            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}]}))
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
        UserData=user_data(clean_sandbox.endpoint), IamInstanceProfile={"Name": "reader"},
        NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnet,
                            "AssociatePublicIpAddress": False}],
        MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"})["Instances"][0]
    assert "PublicIpAddress" not in instance
    return {"id": instance["InstanceId"], "vpc": vpc, "subnet": subnet, "ec2": ec2}


def console(box, instance_id: str) -> str:
    """The instance's cloud-init output once its boot script has ended."""
    log = machines.upper(box.state_dir, instance_id) / "var/log/cloud-init-output.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.is_file() else ""
        if "Cloud-init finished" in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"the boot script did not end: {text[-500:]}")


def test_a_secret_is_read_only_over_a_route_the_vpc_gives(clean_sandbox, private_instance):
    instance_id, ec2 = private_instance["id"], private_instance["ec2"]
    output = console(clean_sandbox, instance_id)
    # IMDSv2: a token-less read is refused, the role's credentials come with a token.
    assert "imds: without a token 401" in output
    assert f"imds: instance {instance_id}" in output
    assert "imds: role reader Success ASIA" in output
    # No public address, no NAT, no endpoint: the read fails and set -e stops the script.
    assert "secret: read" not in output and "boot script done" not in output
    assert "script part-001 failed" in output
    forwarded = (machines.instance_dir(clean_sandbox.state_dir, instance_id)
                 / "forward.log").read_text()
    assert "no route to ssm's endpoint" in forwarded

    ec2.create_vpc_endpoint(VpcId=private_instance["vpc"], VpcEndpointType="Interface",
                            ServiceName="com.amazonaws.us-east-1.ssm",
                            SubnetIds=[private_instance["subnet"]], PrivateDnsEnabled=True)
    again = subprocess.run(
        [*machines.enter_command(clean_sandbox.state_dir, instance_id), "sudo", "-n",
         "python3", "/usr/local/bin/read-secret", clean_sandbox.endpoint, PARAMETER],
        capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr[-1000:]
    assert "secret: read, 12 characters" in again.stdout
