"""Infrastructure tests for the bootstrap stacks: read the real resources, name every problem.

Each check reads what exists (bucket settings, key and trust policies, the lock table…), not the
template, so a setting changed by hand after `invoke bootstrap` shows up here.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from accounts import bootstrap
from accounts.bootstrap import Place
from cloud.aws import Aws, account_spec
from cloud.settings import Settings

KEY_USE = ("kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*",
           "kms:DescribeKey", "kms:CreateGrant")
# Condition keys that make a statement with Principal "*" non-public when given fixed values
# (S3's definition of a public bucket policy).
RESTRICTING_KEYS = {"aws:sourcevpce", "aws:sourcevpc", "aws:sourceaccount", "aws:sourceowner",
                    "aws:sourcearn", "aws:principalaccount", "aws:principalorgid",
                    "aws:principalarn", "aws:userid", "aws:sourceip"}
ALL_USERS = ("http://acs.amazonaws.com/groups/global/AllUsers",
             "http://acs.amazonaws.com/groups/global/AuthenticatedUsers")
GOOD_STATUSES = ("CREATE_COMPLETE", "UPDATE_COMPLETE")


@dataclass
class Check:
    account: str
    name: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"account": self.account, "check": self.name, "ok": self.ok,
                "problems": self.problems}


# -- policy reading ----------------------------------------------------------------------------


def document(policy) -> dict:
    return json.loads(policy) if isinstance(policy, str) else (policy or {})


def statements(policy) -> list[dict]:
    found = document(policy).get("Statement", [])
    return [found] if isinstance(found, dict) else list(found)


def as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def principals(statement: dict) -> list[str]:
    """Every principal a statement names; "*" for everyone."""
    principal = statement.get("Principal")
    if principal == "*":
        return ["*"]
    if isinstance(principal, dict):
        return [p for values in principal.values() for p in as_list(values)]
    return as_list(principal)


def principal_account(principal: str) -> str | None:
    if principal.isdigit():
        return principal
    parts = principal.split(":")
    return parts[4] if principal.startswith("arn:") and len(parts) > 4 else None


def condition_keys(statement: dict) -> dict[str, list]:
    keys: dict[str, list] = {}
    for operator, values in (statement.get("Condition") or {}).items():
        for key, value in (values or {}).items():
            keys.setdefault(key.lower(), []).extend(
                [(operator, v) for v in as_list(value)])
    return keys


def restricted(statement: dict) -> bool:
    """True when a condition pins the statement to fixed, narrow values."""
    for key, pairs in condition_keys(statement).items():
        if key not in RESTRICTING_KEYS or not pairs:
            continue
        if any("*" in str(v) or "?" in str(v) or "Not" in op for op, v in pairs):
            continue
        if key == "aws:sourceip" and not all(_narrow(str(v)) for _, v in pairs):
            continue
        return True
    return False


def _narrow(cidr: str) -> bool:
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    return network.prefixlen >= (8 if network.version == 4 else 32)


def allows(statement: dict) -> bool:
    return statement.get("Effect") == "Allow"


def sid(statement: dict, index: int) -> str:
    return statement.get("Sid") or f"#{index + 1}"


def action_covers(statement: dict, action: str) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), a.lower()) or a.lower() == action.lower()
               for a in as_list(statement.get("Action")))


# -- checks ------------------------------------------------------------------------------------


def run(settings: Settings, build: Aws, account: str | None = None,
        parts: tuple[str, ...] | None = None) -> list[Check]:
    checks: list[Check] = []
    for spec, name, region in bootstrap.targets(settings, account, parts):
        place = bootstrap.place_for(settings, build, name, region)
        stack = _stack_check(spec, place)
        checks.append(stack)
        if not stack.ok:
            continue
        values = bootstrap.outputs(place.client("cloudformation"), spec.name(settings))
        for check in CHECKS.get(spec.part, []):
            checks.append(_guarded(check, place, values))
    return checks


def _guarded(check: Callable[[Place, dict], Check], place, values) -> Check:
    try:
        return check(place, values)
    except ClientError as error:
        name = check.__name__.removeprefix("check_").replace("_", " ")
        return Check(place.account, name, [f"cannot read: {error}"])


def _stack_check(spec, place) -> Check:
    name = spec.name(place.settings)
    check = Check(place.account, f"stack {name}{_in_region(place)}")
    cfn = place.client("cloudformation")
    status = bootstrap.existing_status(cfn, name)
    if status is None:
        check.problems.append(f"stack {name}{_in_region(place)} is missing: "
                              f"run `invoke bootstrap`")
        return check
    if status not in GOOD_STATUSES:
        check.problems.append(f"stack {name} is {status}")
    values = bootstrap.outputs(cfn, name)
    missing = [key for key in spec.outputs if key not in values]
    if missing:
        check.problems.append(f"stack {name} lacks outputs {', '.join(missing)}: "
                              f"run `invoke bootstrap`")
    return check


def _in_region(place: Place) -> str:
    """` in us-west-2` for a stack outside the main region, else nothing."""
    return "" if place.region == place.settings.aws.region else f" in {place.region}"


def check_repo_bucket_private(place: Place, values: dict) -> Check:
    bucket = values["RepoBucket"]
    check = Check(place.account, f"repo bucket {bucket} is not public")
    check.problems += bucket_public_problems(place.aws.client("s3"), bucket)
    return check


def bucket_public_problems(s3, bucket: str) -> list[str]:
    """What makes `bucket` public or able to become so: a public access block flag off, an ACL
    for all users, a policy statement for everyone without a restricting condition."""
    problems = []
    try:
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    except ClientError as error:
        if "NoSuchPublicAccessBlockConfiguration" not in str(error):
            raise
        block = {}
    for flag in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                 "RestrictPublicBuckets"):
        if not block.get(flag):
            problems.append(f"bucket {bucket}: public access block {flag} is off")
    for grant in s3.get_bucket_acl(Bucket=bucket).get("Grants", []):
        if grant.get("Grantee", {}).get("URI") in ALL_USERS:
            problems.append(f"bucket {bucket}: ACL grants {grant['Permission']} to "
                            f"{grant['Grantee']['URI'].rsplit('/', 1)[1]}")
    problems += public_statements(f"bucket {bucket}", bucket_policy(s3, bucket))
    return problems


def public_statements(what: str, policy) -> list[str]:
    """A line for each statement of `policy` that allows everyone without a restricting
    condition."""
    return [f"{what}: policy statement {sid(statement, index)} grants "
            f"{', '.join(as_list(statement.get('Action'))) or 'actions'} to everyone "
            f"(Principal *) without a restricting condition"
            for index, statement in enumerate(statements(policy))
            if allows(statement) and _everyone(statement) and not restricted(statement)]


def _everyone(statement: dict) -> bool:
    return "*" in principals(statement)


def bucket_policy(s3, bucket: str) -> str | None:
    """The bucket's policy document, or None when it has none."""
    try:
        return s3.get_bucket_policy(Bucket=bucket)["Policy"]
    except ClientError as error:
        if "NoSuchBucketPolicy" in str(error):
            return None
        raise


def check_repo_bucket_encrypted(place: Place, values: dict) -> Check:
    bucket = values["RepoBucket"]
    check = Check(place.account, f"repo bucket {bucket} is encrypted")
    check.problems += bucket_encryption_problems(place.aws.client("s3"), bucket)
    return check


def bucket_encryption_problems(s3, bucket: str) -> list[str]:
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket)[
            "ServerSideEncryptionConfiguration"]["Rules"]
    except ClientError as error:
        if "ServerSideEncryptionConfigurationNotFound" not in str(error):
            raise
        rules = []
    if not any(r.get("ApplyServerSideEncryptionByDefault") for r in rules):
        return [f"bucket {bucket}: default encryption is off"]
    return []


def check_repo_bucket_versioned(place: Place, values: dict) -> Check:
    bucket = values["RepoBucket"]
    check = Check(place.account, f"repo bucket {bucket} keeps versions")
    check.problems += bucket_versioning_problems(place.aws.client("s3"), bucket)
    return check


def bucket_versioning_problems(s3, bucket: str) -> list[str]:
    status = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    return [] if status == "Enabled" else [f"bucket {bucket}: versioning is {status or 'off'}"]


def check_repo_readable_by_bake_role(place: Place, values: dict) -> Check:
    bucket, role = values["RepoBucket"], values["BakeRoleArn"]
    check = Check(place.account, "bake role may read the repo")
    granted = any(allows(s) and role in principals(s) and action_covers(s, "s3:GetObject")
                  for s in statements(bucket_policy(place.aws.client("s3"), bucket)))
    if not granted:
        check.problems.append(f"bucket {bucket}: the policy does not let {role} s3:GetObject")
    return check


def check_build_ami_key(place: Place, values: dict) -> Check:
    settings = place.settings
    wanted = {account_spec(settings, name).id for name in bootstrap.other_accounts(settings)}
    check = Check(place.account,
                  f"AMI key{_in_region(place)} is shared with the target accounts only")
    check.problems += _key_problems(place, values["AmiKmsKeyArn"], values["AmiKmsAliasName"],
                                    wanted)
    return check


def check_account_ami_key(place: Place, values: dict) -> Check:
    check = Check(place.account, f"AMI key{_in_region(place)} is used by the deployer role only")
    key = values["AmiKmsKeyArn"]
    check.problems += _key_problems(place, key, values.get("AmiKmsAliasName"), set())
    policy = place.client("kms").get_key_policy(KeyId=key, PolicyName="default")["Policy"]
    if not _grants_use(statements(policy), values["DeployerRoleArn"]):
        check.problems.append(f"key {key}: the policy does not let the deployer role "
                              f"{values['DeployerRoleArn']} use it")
    return check


def check_region_ami_key(place: Place, values: dict) -> Check:
    """A copy region's key (the keys stack): as the main region's key of the same account."""
    if place.account == place.settings.build_account:
        return check_build_ami_key(place, values)
    role = bootstrap.deployer_role_arn(place.settings, place.account, place.region)
    return check_account_ami_key(place, {**values, "DeployerRoleArn": role})


def _key_problems(place: Place, key: str, alias: str | None, wanted: set[str]) -> list[str]:
    kms = place.client("kms")
    problems = []
    meta = kms.describe_key(KeyId=key)["KeyMetadata"]
    if meta.get("KeyState") != "Enabled":
        problems.append(f"key {key} is {meta.get('KeyState')}")
    if alias:
        targets = {a["AliasName"]: a.get("TargetKeyId")
                   for page in kms.get_paginator("list_aliases").paginate()
                   for a in page["Aliases"]}
        if targets.get(alias) != meta["KeyId"]:
            problems.append(f"alias {alias} does not point at key {meta['KeyId']}")
    policy = statements(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
    own = place.aws.account_id
    for index, statement in enumerate(policy):
        if not allows(statement):
            continue
        for principal in principals(statement):
            problems += _key_grant_problems(key, statement, index, principal, own, wanted)
    for account_id in sorted(wanted):
        if not _grants_use(policy, f"arn:aws:iam::{account_id}:root", account_id):
            problems.append(f"key {key}: account {account_id} may not use it "
                            f"(needs {', '.join(KEY_USE)})")
    return problems


def _key_grant_problems(key, statement, index, principal, own, wanted) -> list[str]:
    where = f"key {key}: statement {sid(statement, index)}"
    if principal == "*":
        if restricted(statement):
            return []
        return [f"{where} grants {', '.join(as_list(statement.get('Action')))} to everyone "
                f"(Principal *)"]
    account = principal_account(principal)
    if account is None or account == own:
        return []  # a service principal, or this account's own IAM
    if account not in wanted:
        return [f"{where} grants account {account}, which is not a Kiln target account"]
    if any(a in ("*", "kms:*") for a in as_list(statement.get("Action"))):
        return [f"{where} grants account {account} every KMS action (kms:*): too much"]
    return []


def _grants_use(policy: list[dict], principal: str, account_id: str | None = None) -> bool:
    names = {principal} | ({account_id} if account_id else set())
    allowed = [s for s in policy if allows(s) and names & set(principals(s))]
    return all(any(action_covers(s, action) for s in allowed) for action in KEY_USE)


def check_lock_table(place: Place, values: dict) -> Check:
    table = values["LockTableName"]
    check = Check(place.account, f"lock table {table}")
    ddb = place.aws.client("dynamodb")
    try:
        description = ddb.describe_table(TableName=table)["Table"]
    except ClientError as error:
        if "ResourceNotFound" not in str(error):
            raise
        check.problems.append(f"lock table {table} is missing")
        return check
    schema = [(k["AttributeName"], k["KeyType"]) for k in description["KeySchema"]]
    types = {a["AttributeName"]: a["AttributeType"] for a in description["AttributeDefinitions"]}
    if schema != [("LockKey", "HASH")] or types.get("LockKey") != "S":
        check.problems.append(f"lock table {table}: key is {schema} ({types}), expected "
                              f"LockKey (S) as the only hash key")
    ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") != "ENABLED" or ttl.get("AttributeName") != "ExpiresAt":
        check.problems.append(f"lock table {table}: time to live on ExpiresAt is off, so "
                              f"stale leases stay")
    return check


def check_bake_network(place: Place, values: dict) -> Check:
    check = Check(place.account, "bake network")
    ec2 = place.aws.client("ec2")
    subnets = ec2.describe_subnets(
        Filters=[{"Name": "subnet-id", "Values": [values["BakeSubnetId"]]}])["Subnets"]
    if not subnets:
        check.problems.append(f"bake subnet {values['BakeSubnetId']} is missing")
    elif subnets[0]["VpcId"] != values["BakeVpcId"]:
        check.problems.append(f"bake subnet {values['BakeSubnetId']} is not in the bake VPC "
                              f"{values['BakeVpcId']}")
    groups = place.aws.client("logs").describe_log_groups(
        logGroupNamePrefix=values["LogGroupName"])["logGroups"]
    if not any(g["logGroupName"] == values["LogGroupName"] for g in groups):
        check.problems.append(f"log group {values['LogGroupName']} is missing")
    return check


def check_deployer_trust(place: Place, values: dict) -> Check:
    settings = place.settings
    spec = account_spec(settings, place.account)
    build_id = account_spec(settings, settings.build_account).id
    role_arn = values["DeployerRoleArn"]
    check = Check(place.account, f"deployer role trusts only account {build_id} with the "
                                 f"external id")
    role = place.aws.client("iam").get_role(RoleName=role_arn.rsplit("/", 1)[1])["Role"]
    trust = [s for s in statements(role["AssumeRolePolicyDocument"])
             if allows(s) and action_covers(s, "sts:AssumeRole")]
    if not trust:
        check.problems.append(f"role {role_arn}: nobody may assume it")
    for index, statement in enumerate(trust):
        where = f"role {role_arn}: trust statement {sid(statement, index)}"
        for principal in principals(statement):
            if principal == "*":
                check.problems.append(f"{where} lets anyone (Principal *) assume it")
            elif principal_account(principal) not in (build_id, None):
                check.problems.append(f"{where} trusts {principal}, outside the build account "
                                      f"{build_id}")
        ids = [v for op, v in condition_keys(statement).get("sts:externalid", [])
               if op == "StringEquals"]
        if not ids:
            check.problems.append(f"{where} has no sts:ExternalId condition")
        elif spec.external_id and set(ids) != {spec.external_id}:
            check.problems.append(f"{where} expects another external id than "
                                  f"kiln.accounts.{place.account}.external_id")
    return check


# The calls a promotion and a deploy make as the deployer role, with the resource and the
# condition keys each carries on AWS ({account}, {region}, {prefix} filled in): what
# check_deployer_rights asks IAM's policy simulator about.
_TAGGED = {"aws:RequestTag/kiln:managed-by": "kiln", "aws:TagKeys": ["kiln:managed-by"]}
_OURS = {"aws:ResourceTag/kiln:managed-by": "kiln"}
_GROUP = "arn:aws:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/web-v001"
_TEMPLATE = "arn:aws:ec2:{region}:{account}:launch-template/lt-0123456789abcdef0"
_ELB = "arn:aws:elasticloadbalancing:{region}:{account}"
_TARGET_GROUP = _ELB + ":targetgroup/web-v001/0123456789abcdef"
_LISTENER = _ELB + ":listener/app/{prefix}-env-web/0123456789abcdef/0123456789abcdef"
DEPLOY_CALLS: list[tuple[str, str, dict]] = [
    ("ec2:CopyImage", "arn:aws:ec2:{region}::image/ami-0123456789abcdef0", {}),
    ("ec2:CreateTags", "arn:aws:ec2:{region}::image/*", {"ec2:CreateAction": "CopyImage"}),
    ("ec2:DeregisterImage", "arn:aws:ec2:{region}::image/ami-0123456789abcdef0", _OURS),
    ("ssm:PutParameter", "arn:aws:ssm:{region}:{account}:parameter/{prefix}/web/prod/ami", {}),
    ("ssm:AddTagsToResource", "arn:aws:ssm:{region}:{account}:parameter/{prefix}/web/prod/ami",
     {}),
    ("ec2:CreateLaunchTemplate", "arn:aws:ec2:{region}:{account}:launch-template/*", _TAGGED),
    ("ec2:CreateTags", "arn:aws:ec2:{region}:{account}:launch-template/*",
     {**_TAGGED, "ec2:CreateAction": "CreateLaunchTemplate"}),
    ("ec2:DeleteLaunchTemplate", _TEMPLATE, _OURS),
    ("elasticloadbalancing:CreateTargetGroup", _ELB + ":targetgroup/web-v001/*", _TAGGED),
    ("elasticloadbalancing:AddTags", _ELB + ":targetgroup/web-v001/*", _TAGGED),
    ("elasticloadbalancing:DeleteTargetGroup", _TARGET_GROUP, _OURS),
    ("elasticloadbalancing:ModifyListener", _LISTENER, {}),
    ("autoscaling:CreateAutoScalingGroup", _GROUP, _TAGGED),
    ("autoscaling:CreateOrUpdateTags", _GROUP, _TAGGED),
    ("autoscaling:UpdateAutoScalingGroup", _GROUP, _OURS),
    ("autoscaling:DeleteAutoScalingGroup", _GROUP, _OURS),
    ("autoscaling:SetInstanceHealth", _GROUP, _OURS),
    # Auto Scaling checks that whoever makes a group may launch from its template
    ("ec2:RunInstances", "arn:aws:ec2:{region}:{account}:instance/*", {}),
    ("ec2:RunInstances", _TEMPLATE, {}),
    ("ec2:RunInstances", "arn:aws:ec2:{region}::image/ami-0123456789abcdef0", {}),
    ("iam:PassRole", "arn:aws:iam::{account}:role/{prefix}-env-web-instance",
     {"iam:PassedToService": "ec2.amazonaws.com"}),
    ("dynamodb:PutItem", "arn:aws:dynamodb:{region}:{account}:table/{prefix}-env-web-locks", {}),
]


def check_deployer_rights(place: Place, values: dict) -> Check:
    """Ask IAM's policy simulator whether the deployer role may make each call of a promotion
    and a deploy, with its resource and condition keys, so a denial shows here and not in the
    account's first deploy."""
    role_arn = values["DeployerRoleArn"]
    check = Check(place.account, "deployer role may promote and deploy")
    iam = place.aws.client("iam")
    fill = {"account": role_arn.split(":")[4], "region": place.region,
            "prefix": place.settings.stacks.prefix}
    for action, resource, context in DEPLOY_CALLS:
        arn = resource.format(**fill)
        entries = [{"ContextKeyName": key, "ContextKeyValues": as_list(value),
                    "ContextKeyType": "stringList" if isinstance(value, list) else "string"}
                   for key, value in context.items()]
        result = iam.simulate_principal_policy(
            PolicySourceArn=role_arn, ActionNames=[action], ResourceArns=[arn],
            ContextEntries=entries)["EvaluationResults"][0]
        if result["EvalDecision"] != "allowed":
            check.problems.append(f"role {role_arn} may not {action} on {arn} "
                                  f"({result['EvalDecision']})")
    return check


CHECKS: dict[str, list[Callable[[Place, dict], Check]]] = {
    "build": [check_repo_bucket_private, check_repo_bucket_encrypted, check_repo_bucket_versioned,
              check_repo_readable_by_bake_role, check_build_ami_key, check_lock_table,
              check_bake_network],
    "prod": [check_deployer_trust, check_deployer_rights, check_account_ami_key],
    "keys": [check_region_ami_key],
}


def register(part: str, check: Callable[[Place, dict], Check]) -> None:
    """Add a check for the stacks of `part` (it receives the place and the stack's outputs)."""
    CHECKS.setdefault(part, []).append(check)
