"""The environment's instance role reads exactly the secrets user data names
(kiln.deploy.user_data.secrets): those SSM parameters and Secrets Manager secrets, decrypted
through their services, and no others. Judged by the sandbox's IAM evaluation over every policy
the role holds, as AWS would judge the instance's calls."""

from __future__ import annotations

import json

import pytest
from cfnlint.decode import cfn_yaml

from sandbox.aws.iam import policy
from tests.deploy_helpers import FAST, TEMPLATE, admin_of, env_stack

SECRETS = {"DB_PASSWORD": "ssm:/hello-web/db-password",
           "API_TOKEN": "secretsmanager:hello-web/api-token"}
REGION, ACCOUNT = "us-east-1", "222222222222"
PARAMETER = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/hello-web/db-password"
SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:hello-web/api-token-Ab12Cd"
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture
def deploy_overrides() -> dict:
    return {"deploy": {**FAST["deploy"], "user_data": {"secrets": SECRETS}}}


def role_policies(daws, outputs) -> list[dict]:
    iam = admin_of(daws).client("iam")
    profile = outputs["InstanceProfileArn"].rsplit("/", 1)[1]
    role = iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"][0]
    name = role["RoleName"]
    found = [iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"]
             for p in iam.list_role_policies(RoleName=name)["PolicyNames"]]
    for attached in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        version = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]["DefaultVersionId"]
        found.append(iam.get_policy_version(PolicyArn=attached["PolicyArn"], VersionId=version)[
            "PolicyVersion"]["Document"])
    return found


def allowed(policies, action: str, resource: str, via: str | None = None) -> bool:
    context = {"kms:viaservice": via} if via else {}
    return policy.evaluate(policies, action, resource, context) is policy.Result.ALLOW


def test_instance_role_reads_exactly_the_named_secrets(daws, outputs):
    policies = role_policies(daws, outputs)
    assert allowed(policies, "ssm:GetParameter", PARAMETER)
    assert allowed(policies, "ssm:GetParameters", PARAMETER)
    assert allowed(policies, "secretsmanager:GetSecretValue", SECRET)
    assert allowed(policies, "kms:Decrypt", KEY, via=f"ssm.{REGION}.amazonaws.com")
    assert allowed(policies, "kms:Decrypt", KEY, via=f"secretsmanager.{REGION}.amazonaws.com")
    other_parameter = PARAMETER.replace("db-password", "other-app-password")
    assert not allowed(policies, "ssm:GetParameter", other_parameter)
    assert not allowed(policies, "secretsmanager:GetSecretValue",
                       SECRET.replace("api-token", "other-token"))
    assert not allowed(policies, "kms:Decrypt", KEY)  # directly: no
    assert not allowed(policies, "kms:Decrypt", KEY, via=f"s3.{REGION}.amazonaws.com")


def test_instance_role_reads_no_secret_when_none_is_named(daws):
    daws.settings.deploy.user_data["secrets"] = None
    policies = role_policies(daws, env_stack(daws))
    assert not allowed(policies, "ssm:GetParameter", PARAMETER)
    assert not allowed(policies, "secretsmanager:GetSecretValue", SECRET)


def test_instance_role_attaches_no_aws_policy_reading_every_parameter():
    """AWS's managed policies the role attaches (their text as moto ships it) grant no read of
    the named secrets either: AmazonSSMManagedInstanceCore's ssm:GetParameter(s) on "*" is
    replaced by the same rights without them."""
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    role = cfn_yaml.load(str(TEMPLATE))["Resources"]["InstanceRole"]["Properties"]
    attached = json.dumps(role.get("ManagedPolicyArns", []))
    known = json.loads(aws_managed_policies_data)
    documents = [known[name]["Document"] for name in known if f"policy/{name}\"" in attached]
    assert documents, attached
    assert not allowed(documents, "ssm:GetParameter", PARAMETER)
    assert not allowed(documents, "secretsmanager:GetSecretValue", SECRET)


def test_secret_references_become_exact_arns_and_bad_ones_are_refused():
    from cloud.errors import KilnError
    from cloud.settings import Settings
    from orchestrator.stack import secret_arns

    arn = "arn:aws:secretsmanager:us-east-1:222222222222:secret:shared/token-Xy12Zw"
    named = Settings(secrets={"A": "ssm:/app/a", "B": "ssm:app-b", "C": f"secretsmanager:{arn}",
                              "D": "secretsmanager:app/d"})
    assert secret_arns(named, "aws", REGION, ACCOUNT) == (
        [f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/app/a",
         f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/app-b"],
        [arn, f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:app/d-??????"])
    for bad in ("ssm:/app/*", "ssm:a,b", "secretsmanager:x*", "vault:x", "ssm:",
                "ssm:arn:aws:s3:::bucket", "secretsmanager:arn:aws:secretsmanager:*"):
        with pytest.raises(KilnError, match="kiln.deploy.user_data.secrets.X: "):
            secret_arns(Settings(secrets={"X": bad}), "aws", REGION, ACCOUNT)


def test_bootstrap_grants_each_app_its_own_secrets_only(kiln_settings):
    """An app's own kiln.apps.<app>.deploy.user_data.secrets reach its environment stack, kiln.app's
    included, and no other app's: what `invoke bootstrap` gives each stack as parameters."""
    from accounts import bootstrap
    from cloud.target import connect
    from orchestrator import stack as env_stacks

    prod = kiln_settings().accounts.prod.id
    own = {"hello-web": "ssm:/hello-web/db-password", "billing": "ssm:/billing/stripe-sk"}
    settings = kiln_settings(apps={app: {"deploy": {"user_data": {"secrets": {"S": name}}}}
                                   for app, name in own.items()})
    parts = env_stacks.register_clusters(settings)
    build = connect(settings, admin=True)
    granted = {}
    for spec, account, region in bootstrap.targets(settings, None, ("env-{app}", *parts)):
        parameters = spec.parameters(bootstrap.place_for(settings, build, account, region))
        granted[spec.part_for(settings)] = parameters["SecretParameterArns"]
    assert granted == {f"env-{app}": f"arn:aws:ssm:{REGION}:{prod}:parameter{name[4:]}"
                       for app, name in own.items()}
