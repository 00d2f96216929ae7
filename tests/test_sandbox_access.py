"""The sandbox authenticates and authorizes every request as AWS does (sandbox/aws/
access_control.py): its own credentials, identity policies, trust policies, key policies."""

from __future__ import annotations

import json
import os
import stat
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.exceptions import ClientError

from sandbox.aws.iam import identities
from tests.image_helpers import make_image

PROD = "222222222222"


def client(box, service: str, identity: str = "admin", **keys):
    credentials = keys or {"aws_access_key_id": box.credentials(identity)["AWS_ACCESS_KEY_ID"],
                           "aws_secret_access_key":
                               box.credentials(identity)["AWS_SECRET_ACCESS_KEY"]}
    return boto3.client(service, endpoint_url=box.endpoint, region_name="us-east-1",
                        **credentials)


def session_client(service: str, box, credentials: dict):
    return boto3.client(service, endpoint_url=box.endpoint, region_name="us-east-1",
                        aws_access_key_id=credentials["AccessKeyId"],
                        aws_secret_access_key=credentials["SecretAccessKey"],
                        aws_session_token=credentials["SessionToken"])


def policy(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def error_of(call) -> ClientError:
    with pytest.raises(ClientError) as raised:
        call()
    return raised.value


def test_credentials_are_the_sandboxs_own_and_private(strict_box):
    path = strict_box.state_dir / identities.CREDENTIALS
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    admin, operator = (strict_box.credentials(name)["AWS_ACCESS_KEY_ID"]
                       for name in ("admin", "operator"))
    assert admin != operator and "testing" not in (admin, operator)
    assert strict_box.env()["AWS_ACCESS_KEY_ID"] == operator
    arns = [client(strict_box, "sts", name).get_caller_identity()["Arn"]
            for name in ("admin", "operator")]
    assert arns == ["arn:aws:iam::123456789012:user/kiln-admin",
                    "arn:aws:iam::123456789012:user/kiln-operator"]


@pytest.mark.parametrize("service", ["ec2", "s3", "sts", "dynamodb"])
def test_requests_by_unknown_keys_are_refused(strict_box, service):
    dummy = client(strict_box, service, aws_access_key_id="testing",
                   aws_secret_access_key="testing")
    calls = {"ec2": lambda: dummy.describe_instances(), "s3": lambda: dummy.list_buckets(),
             "sts": lambda: dummy.get_caller_identity(), "dynamodb": lambda: dummy.list_tables()}
    code = error_of(calls[service]).response["Error"]["Code"]
    assert code in ("AuthFailure", "InvalidAccessKeyId", "InvalidClientTokenId",
                    "UnrecognizedClientException")


def test_a_known_key_with_the_wrong_secret_is_refused(strict_box):
    forged = client(strict_box, "ec2",
                    aws_access_key_id=strict_box.credentials()["AWS_ACCESS_KEY_ID"],
                    aws_secret_access_key="not-the-secret")
    assert error_of(forged.describe_instances).response["Error"]["Code"] == "AuthFailure"


def test_unsigned_requests_are_refused_except_what_a_bucket_policy_grants(clean_strict):
    s3 = client(clean_strict, "s3")
    s3.create_bucket(Bucket="open-reads")
    s3.put_object(Bucket="open-reads", Key="a", Body=b"hello")
    s3.put_bucket_policy(Bucket="open-reads", Policy=policy({
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::open-reads/*",
        "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.1/32"}}}))
    base = clean_strict.endpoint
    assert urllib.request.urlopen(f"{base}/open-reads/a").read() == b"hello"
    put = urllib.request.Request(f"{base}/open-reads/b", data=b"x", method="PUT")
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(put)
    query = urllib.request.Request(f"{base}/?Action=DescribeInstances&Version=2016-11-15")
    with pytest.raises(urllib.error.HTTPError, match="40"):
        urllib.request.urlopen(query)
    s3.put_bucket_policy(Bucket="open-reads", Policy=policy({
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::open-reads/*",
        "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}))
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(f"{base}/open-reads/a")


def test_the_switches_that_would_turn_checks_off_are_refused(strict_box):
    for method, path in (("POST", "reset-auth"), ("POST", "data.json"), ("POST", "reset"),
                         ("POST", "config"), ("GET", "data.json"), ("GET", ""),
                         ("POST", "static/lambda-simple/response"), ("POST", "seed"),
                         ("GET", "recorder/download-recording")):
        request = urllib.request.Request(f"{strict_box.endpoint}/moto-api/{path}",
                                         data=b"inf" if method == "POST" else None,
                                         method=method)
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(request)
    with urllib.request.urlopen(f"{strict_box.endpoint}/moto-api/config") as probe:
        assert probe.status in (200, 201)
    sts = client(strict_box, "sts", "operator")

    def pick_another_account(request, **_):
        request.headers["x-moto-account-id"] = PROD

    sts.meta.events.register("before-sign.*.*", pick_another_account)
    assert sts.get_caller_identity()["Account"] == "123456789012"


def test_a_denial_names_identity_action_and_resource(strict_box):
    iam = client(strict_box, "iam", "operator")
    error = error_of(lambda: iam.create_user(UserName="intruder")).response["Error"]
    assert error["Code"] == "AccessDenied"
    assert error["Message"].startswith(
        "User: arn:aws:iam::123456789012:user/kiln-operator is not authorized to perform: "
        "iam:CreateUser on resource: arn:aws:iam::123456789012:user/intruder")
    ec2 = client(strict_box, "ec2", "operator")
    vpcs = error_of(lambda: ec2.create_vpc(CidrBlock="10.1.0.0/16")).response["Error"]
    assert vpcs["Code"] == "UnauthorizedOperation" and "ec2:CreateVpc" in vpcs["Message"]


def _role(box, name: str, trust: dict, account_admin=None):
    iam = account_admin or client(box, "iam")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName=name, PolicyName="read", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "ec2:DescribeImages", "Resource": "*"}))


def _prod_admin(box):
    sts = client(box, "sts")
    credentials = sts.assume_role(
        RoleArn=f"arn:aws:iam::{PROD}:role/{identities.ORGANIZATION_ROLE}",
        RoleSessionName="setup")["Credentials"]
    return session_client("iam", box, credentials)


def test_assume_role_honours_the_trust_policy(clean_strict):
    trust = {"Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": "the-id"},
                      "ArnEquals": {"aws:PrincipalArn":
                                    "arn:aws:iam::123456789012:user/kiln-admin"}}}]}
    _role(clean_strict, "trusting", trust, _prod_admin(clean_strict))
    sts = client(clean_strict, "sts")
    arn = f"arn:aws:iam::{PROD}:role/trusting"
    for wrong in ({}, {"ExternalId": "other"}):
        error = error_of(lambda w=wrong: sts.assume_role(RoleArn=arn, RoleSessionName="s1",
                                                         **w)).response["Error"]
        assert error["Code"] == "AccessDenied" and "trust policy" in error["Message"]
    credentials = sts.assume_role(RoleArn=arn, RoleSessionName="s1",
                                  ExternalId="the-id")["Credentials"]
    ec2 = session_client("ec2", clean_strict, credentials)
    ec2.describe_images(Owners=["self"])
    assert error_of(lambda: ec2.describe_vpcs()).response["Error"]["Code"] == \
        "UnauthorizedOperation"
    # another user of the trusted account, allowed by its own policy: not the principal named
    other = client(clean_strict, "iam").create_user(UserName="someone")["User"]["UserName"]
    client(clean_strict, "iam").put_user_policy(
        UserName=other, PolicyName="assume", PolicyDocument=policy({
            "Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}))
    keys = client(clean_strict, "iam").create_access_key(UserName=other)["AccessKey"]
    someone = client(clean_strict, "sts", aws_access_key_id=keys["AccessKeyId"],
                     aws_secret_access_key=keys["SecretAccessKey"])
    error = error_of(lambda: someone.assume_role(RoleArn=arn, RoleSessionName="s2",
                                                 ExternalId="the-id")).response["Error"]
    assert "trust policy" in error["Message"]


def test_assume_role_fails_for_a_role_that_does_not_exist(strict_box):
    sts = client(strict_box, "sts")
    error = error_of(lambda: sts.assume_role(RoleArn=f"arn:aws:iam::{PROD}:role/no-such-role",
                                             RoleSessionName="s1")).response["Error"]
    assert error["Code"] == "AccessDenied" and "does not exist" in error["Message"]


def test_kms_needs_the_key_policy_and_the_identity_policy(clean_strict):
    kms = client(clean_strict, "kms")
    only_root = {"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*",
                                "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}]}
    key = kms.create_key(Policy=json.dumps(only_root))["KeyMetadata"]["KeyId"]
    kms.encrypt(KeyId=key, Plaintext=b"x")  # admin: root statement + identity policy
    operator = client(clean_strict, "kms", "operator")
    error = error_of(lambda: operator.disable_key(KeyId=key)).response["Error"]
    assert "kms:DisableKey" in error["Message"]
    nobody = {"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*",
                             "Principal": {"AWS": f"arn:aws:iam::{PROD}:root"}}]}
    closed = kms.create_key(Policy=json.dumps(nobody))["KeyMetadata"]["KeyId"]
    error = error_of(lambda: kms.encrypt(KeyId=closed, Plaintext=b"x")).response["Error"]
    assert "the key policy does not allow it" in error["Message"]


def test_sandbox_env_prints_the_operators_keys(sandbox_box, run_invoke):
    result = run_invoke("sandbox.env", check=True)
    assert f"AWS_ACCESS_KEY_ID={sandbox_box.credentials()['AWS_ACCESS_KEY_ID']}" in \
        result.stdout.replace("'", "").replace('"', "")
    assert "testing" not in result.stdout
    assert os.environ["AWS_ACCESS_KEY_ID"] == sandbox_box.credentials("admin")[
        "AWS_ACCESS_KEY_ID"]


def test_resource_tags_scope_what_a_role_may_remove(clean_strict):
    """aws:ResourceTag is evaluated for the EC2 resources a call changes (images, snapshots,
    instances, volumes, security groups, launch templates)."""
    trust = {"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                            "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}]}
    iam = client(clean_strict, "iam")
    iam.create_role(RoleName="remover", AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName="remover", PolicyName="tagged", PolicyDocument=policy(
        {"Effect": "Allow", "Action": ["ec2:DeregisterImage", "ec2:DescribeImages"],
         "Resource": "*",
         "Condition": {"StringEquals": {"aws:ResourceTag/kiln:managed-by": "kiln"}}}))
    ec2 = client(clean_strict, "ec2")
    base = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1)["Instances"][0]
    images = {}
    for name, tags in (("ours", [{"Key": "kiln:managed-by", "Value": "kiln"}]), ("theirs", [])):
        spec = [{"ResourceType": "image", "Tags": tags}] if tags else []
        images[name] = ec2.create_image(InstanceId=instance["InstanceId"], Name=name,
                                        TagSpecifications=spec)["ImageId"]
    credentials = client(clean_strict, "sts").assume_role(
        RoleArn="arn:aws:iam::123456789012:role/remover", RoleSessionName="s1")["Credentials"]
    remover = session_client("ec2", clean_strict, credentials)
    remover.deregister_image(ImageId=images["ours"])
    error = error_of(lambda: remover.deregister_image(ImageId=images["theirs"]))
    assert error.response["Error"]["Code"] == "UnauthorizedOperation"
    assert f"image/{images['theirs']}" in error.response["Error"]["Message"]


def test_public_parameters_have_no_account_in_their_arn(strict_box):
    """AWS's public parameters (/aws/service/...) are arn:aws:ssm:REGION::parameter/...: a policy
    naming them without an account, as the operator's does, lets the operator read them."""
    ssm = client(strict_box, "ssm", "operator")
    name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"].startswith("ami-")
    error = error_of(lambda: ssm.get_parameter(Name="/elsewhere/secret")).response["Error"]
    assert "arn:aws:ssm:us-east-1:123456789012:parameter/elsewhere/secret" in error["Message"]


def _launcher(box, may_pass: bool):
    """An app role in an instance profile, and a `launcher` role allowed to launch (and, if
    `may_pass`, to pass the app role to EC2): its EC2 and Auto Scaling clients."""
    iam = client(box, "iam")
    ec2_trust = {"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                "Principal": {"Service": "ec2.amazonaws.com"}}]}
    iam.create_role(RoleName="app", AssumeRolePolicyDocument=json.dumps(ec2_trust))
    iam.create_instance_profile(InstanceProfileName="app")
    iam.add_role_to_instance_profile(InstanceProfileName="app", RoleName="app")
    root = {"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                           "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}]}
    iam.create_role(RoleName="launcher", AssumeRolePolicyDocument=json.dumps(root))
    statements = [{"Effect": "Allow", "Action": [
        "ec2:RunInstances", "ec2:Describe*", "ec2:CreateLaunchTemplate",
        "autoscaling:CreateAutoScalingGroup"], "Resource": "*"}]
    if may_pass:
        statements.append({"Effect": "Allow", "Action": "iam:PassRole",
                           "Resource": "arn:aws:iam::123456789012:role/app",
                           "Condition": {"StringEquals": {
                               "iam:PassedToService": "ec2.amazonaws.com"}}})
    iam.put_role_policy(RoleName="launcher", PolicyName="launch",
                        PolicyDocument=policy(*statements))
    credentials = client(box, "sts").assume_role(
        RoleArn="arn:aws:iam::123456789012:role/launcher", RoleSessionName="launch")["Credentials"]
    return (session_client("ec2", box, credentials),
            session_client("autoscaling", box, credentials))


@pytest.mark.parametrize("may_pass", [False, True])
def test_giving_an_instance_a_role_needs_iam_pass_role(clean_strict, may_pass):
    """RunInstances with an instance profile, and an Auto Scaling group whose launch template
    names one, need iam:PassRole on the profile's role, as on AWS."""
    ec2, autoscaling = _launcher(clean_strict, may_pass)
    base = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    template = ec2.create_launch_template(LaunchTemplateName="app", LaunchTemplateData={
        "ImageId": base, "IamInstanceProfile": {"Name": "app"}})["LaunchTemplate"]
    calls = {
        "ec2:RunInstances": lambda: ec2.run_instances(
            ImageId=base, MinCount=1, MaxCount=1, IamInstanceProfile={"Name": "app"}),
        "autoscaling:CreateAutoScalingGroup": lambda: autoscaling.create_auto_scaling_group(
            AutoScalingGroupName="app", MinSize=0, MaxSize=0, AvailabilityZones=["us-east-1a"],
            LaunchTemplate={"LaunchTemplateId": template["LaunchTemplateId"],
                            "Version": "$Latest"}),
    }
    for name, call in calls.items():
        if may_pass:
            call()
            continue
        error = error_of(call).response["Error"]
        assert "iam:PassRole on resource: arn:aws:iam::123456789012:role/app" in \
            error["Message"], name


def _ebs_user(box, key_arn: str, actions: list[str]):
    """A role allowed to launch and copy images, and to use `key_arn` through EC2 for `actions`
    (the key's policy defers to the account's identity policies): its EC2 client."""
    iam = client(box, "iam")
    root = {"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                           "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}]}
    iam.create_role(RoleName="ebs-user", AssumeRolePolicyDocument=json.dumps(root))
    statements = [{"Effect": "Allow", "Action": ["ec2:RunInstances", "ec2:CopyImage",
                                                  "ec2:CreateTags", "ec2:Describe*"],
                   "Resource": "*"}]
    if actions:
        statements.append({"Effect": "Allow", "Action": actions, "Resource": key_arn,
                           "Condition": {"StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}}})
    iam.put_role_policy(RoleName="ebs-user", PolicyName="ebs", PolicyDocument=policy(*statements))
    credentials = client(box, "sts").assume_role(
        RoleArn="arn:aws:iam::123456789012:role/ebs-user", RoleSessionName="ebs")["Credentials"]
    return session_client("ec2", box, credentials)


@pytest.mark.parametrize("may_use", [False, True])
def test_encrypting_volumes_and_copies_needs_the_callers_key_rights(clean_strict, may_use):
    """RunInstances with a volume encrypted by a customer managed key, and CopyImage into one,
    use the key as the caller, through EC2: the caller needs kms:CreateGrant and
    kms:GenerateDataKeyWithoutPlaintext on it, as on AWS."""
    kms = client(clean_strict, "kms")
    key = kms.create_key(Policy=json.dumps({"Statement": [{
        "Effect": "Allow", "Action": "kms:*", "Resource": "*",
        "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}]}))["KeyMetadata"]["Arn"]
    ec2 = _ebs_user(clean_strict, key, ["kms:CreateGrant", "kms:GenerateDataKeyWithoutPlaintext",
                                        "kms:Decrypt"] if may_use else [])
    base = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    own = make_image(client(clean_strict, "ec2"), None)
    calls = {
        "RunInstances": lambda: ec2.run_instances(
            ImageId=base, MinCount=1, MaxCount=1, BlockDeviceMappings=[{
                "DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8, "Encrypted": True,
                                              "KmsKeyId": key}}]),
        "CopyImage": lambda: ec2.copy_image(SourceImageId=own, SourceRegion="us-east-1",
                                            Name="copy", Encrypted=True, KmsKeyId=key),
    }
    for name, call in calls.items():
        if may_use:
            call()
            continue
        error = error_of(call).response["Error"]
        assert error["Code"] == "UnauthorizedOperation", name
        assert f"kms:CreateGrant on resource: {key}" in error["Message"], name


def test_an_s3_denial_is_an_s3_error_naming_action_and_resource(strict_box):
    """S3 answers a bare <Error> document: its code is AccessDenied, as on AWS."""
    s3 = client(strict_box, "s3", "operator")
    response = error_of(lambda: s3.create_bucket(Bucket="not-allowed-here")).response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    error = response["Error"]
    assert error["Code"] == "AccessDenied"
    assert "s3:CreateBucket on resource: arn:aws:s3:::not-allowed-here" in error["Message"]


def test_a_role_made_again_under_its_name_does_not_revive_old_sessions(clean_strict):
    """AWS tells a re-created role from the deleted one by its id: sessions of the old one keep
    none of the new one's permissions."""
    trust = {"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                            "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}]}
    iam = client(clean_strict, "iam")
    reader = policy({"Effect": "Allow", "Action": "ec2:DescribeRegions", "Resource": "*"})

    def make_role():
        iam.create_role(RoleName="again", AssumeRolePolicyDocument=json.dumps(trust))
        iam.put_role_policy(RoleName="again", PolicyName="read", PolicyDocument=reader)

    make_role()
    credentials = client(clean_strict, "sts").assume_role(
        RoleArn="arn:aws:iam::123456789012:role/again", RoleSessionName="old")["Credentials"]
    old = session_client("ec2", clean_strict, credentials)
    old.describe_regions()
    iam.delete_role_policy(RoleName="again", PolicyName="read")
    iam.delete_role(RoleName="again")
    import time

    time.sleep(1.1)  # IAM's dates have whole seconds
    make_role()
    error = error_of(lambda: old.describe_regions())
    assert error.response["Error"]["Code"] == "UnauthorizedOperation"
    fresh = client(clean_strict, "sts").assume_role(
        RoleArn="arn:aws:iam::123456789012:role/again", RoleSessionName="new")["Credentials"]
    session_client("ec2", clean_strict, fresh).describe_regions()


def test_another_accounts_identity_needs_the_bucket_policy_too(clean_strict):
    """Cross-account S3 needs both sides, as on AWS: prod's administrator may not write into a
    build-account bucket whose policy does not grant prod, and may once it does; a bucket
    policy's Deny holds against the owner's own users."""
    s3 = client(clean_strict, "s3")
    s3.create_bucket(Bucket="build-owned")
    role = f"arn:aws:iam::{PROD}:role/{identities.ORGANIZATION_ROLE}"
    prod = session_client("s3", clean_strict, client(clean_strict, "sts").assume_role(
        RoleArn=role, RoleSessionName="prod-admin")["Credentials"])
    error = error_of(lambda: prod.put_object(Bucket="build-owned", Key="x", Body=b"x"))
    assert error.response["Error"]["Code"] == "AccessDenied"
    assert "another account's bucket needs both" in error.response["Error"]["Message"]
    s3.put_bucket_policy(Bucket="build-owned", Policy=policy(
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{PROD}:root"},
         "Action": "s3:PutObject", "Resource": "arn:aws:s3:::build-owned/*"},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject",
         "Resource": "arn:aws:s3:::build-owned/*"}))
    prod.put_object(Bucket="build-owned", Key="x", Body=b"x")
    error = error_of(lambda: s3.delete_object(Bucket="build-owned", Key="x"))
    assert error.response["Error"]["Code"] == "AccessDenied"
    assert "s3:DeleteObject on resource: arn:aws:s3:::build-owned/x because the bucket policy " \
        "explicitly denies it" in error.response["Error"]["Message"]
