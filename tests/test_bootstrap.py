"""`invoke bootstrap` and `invoke bootstrap.verify` against the test sandbox."""

import json
import urllib.error
import urllib.request

import boto3
import pytest

from accounts import bootstrap, verify
from cloud import locks, stacks
from cloud.errors import KilnError
from cloud.target import connect
from tests.conftest import deep_merge
from tests.pipeline_helpers import engine_config

# The support stacks of this area; other areas register more (e.g. kiln-env-<app>).
PARTS = ("build", "prod", "keys")
WEST = "us-west-2"


@pytest.fixture
def config_overrides(config_overrides):
    """Bootstrap meets accounts as they are on AWS: lived-in (sandbox/aws/lived_in.py)."""
    return deep_merge(config_overrides, {"sandbox": {"account_state": "lived-in"}})


@pytest.fixture
def clean_sandbox(lived_in):
    return lived_in


@pytest.fixture
def fresh(clean_sandbox, kiln_settings):
    """A bootstrapped sandbox: both stacks created with --yes."""
    aws = connect(kiln_settings(), admin=True)
    bootstrap.run(aws.settings, aws, yes=True, parts=PARTS)
    return aws


def problems(aws, account=None) -> list[str]:
    return [p for check in verify.run(aws.settings, aws, account, PARTS)
            for p in check.problems]


def test_bootstrap_creates_both_stacks_and_their_outputs_resolve(clean_sandbox, kiln_settings):
    aws = connect(kiln_settings(), admin=True)
    results = bootstrap.run(aws.settings, aws, yes=True, parts=PARTS)
    assert [(r["stack"], r["account"], r["action"]) for r in results] == [
        ("kiln-build", "build", "created"), ("kiln-prod", "prod", "created")]
    for key in bootstrap.BUILD_OUTPUTS:
        assert stacks.output(aws, "build", key)
    prod = aws.admin("prod")
    assert stacks.output(prod, "prod", "DeployerRoleArn") == \
        "arn:aws:iam::222222222222:role/kiln-deployer"
    assert ":222222222222:key/" in stacks.output(prod, "prod", "AmiKmsKeyArn")
    # The resources behind the outputs are real and configured as the template says.
    bucket = stacks.output(aws, "build", "RepoBucket")
    s3 = aws.client("s3")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
               .values())
    table = stacks.output(aws, "build", "LockTableName")
    with locks.lease(aws, table, "bootstrap-test", "pytest"):
        assert locks.holder(aws, table, "bootstrap-test")["owner"] == "pytest"
    stack = aws.client("cloudformation").describe_stacks(StackName="kiln-build")["Stacks"][0]
    assert {"Key": "kiln:managed-by", "Value": "kiln"} in stack["Tags"]


def stack_types(session, stack: str) -> set[str]:
    resources = session.client("cloudformation").describe_stack_resources(StackName=stack)
    return {r["ResourceType"] for r in resources["StackResources"]}


def test_an_account_with_auto_scalings_role_keeps_it_and_gets_its_stack(clean_sandbox,
                                                                        kiln_settings):
    aws = connect(kiln_settings(), admin=True)
    iam = aws.admin("prod").client("iam")
    before = iam.get_role(RoleName="AWSServiceRoleForAutoScaling")["Role"]
    results = bootstrap.run(aws.settings, aws, yes=True, parts=("prod",))
    assert [r["action"] for r in results] == ["created"]
    assert iam.get_role(RoleName="AWSServiceRoleForAutoScaling")["Role"]["RoleId"] == \
        before["RoleId"]
    assert results[0]["outputs"]["AutoScalingRoleArn"] == before["Arn"]
    assert "AWS::IAM::ServiceLinkedRole" not in stack_types(aws.admin("prod"), "kiln-prod")


def test_a_new_account_gets_auto_scalings_role_outside_the_stack(clean_sandbox, kiln_settings):
    clean_sandbox.set_account_state("new")
    clean_sandbox.reset()
    aws = connect(kiln_settings(sandbox={"account_state": "new"}), admin=True)
    iam = aws.admin("prod").client("iam")
    assert not iam.list_roles(PathPrefix="/aws-service-role/")["Roles"]
    planned = bootstrap.run(aws.settings, aws, dry_run=True, parts=("prod",))
    assert [r["action"] for r in planned] == ["planned"]
    assert not iam.list_roles(PathPrefix="/aws-service-role/")["Roles"]  # a plan changes nothing
    bootstrap.run(aws.settings, aws, yes=True, parts=("prod",))
    role = iam.get_role(RoleName="AWSServiceRoleForAutoScaling")["Role"]
    assert role["Path"] == "/aws-service-role/autoscaling.amazonaws.com/"
    assert "AWS::IAM::ServiceLinkedRole" not in stack_types(aws.admin("prod"), "kiln-prod")
    aws.admin("prod").client("cloudformation").delete_stack(StackName="kiln-prod")
    assert iam.get_role(RoleName="AWSServiceRoleForAutoScaling")["Role"]["RoleId"] == \
        role["RoleId"]  # Auto Scaling's, not the stack's: it outlives the stack


def test_the_operator_may_abort_its_uploads_and_read_the_repo_acl(fresh, kiln_settings):
    operator = connect(kiln_settings())
    bucket = stacks.output(operator, "build", "RepoBucket")
    s3 = operator.client("s3")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="packages/x.rpm")["UploadId"]
    s3.abort_multipart_upload(Bucket=bucket, Key="packages/x.rpm", UploadId=upload)
    assert not boto3.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert s3.get_bucket_acl(Bucket=bucket)["Owner"]


def test_the_operator_policy_assumes_the_deployer_roles_as_configured(clean_sandbox,
                                                                      kiln_settings):
    settings = kiln_settings(accounts={"prod": {"role": "release-deployer"}})
    aws = connect(settings, admin=True)
    (result,) = bootstrap.run(aws.settings, aws, yes=True, parts=("operator",))
    iam = aws.client("iam")
    arn = result["outputs"]["OperatorPolicyArn"]
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]
    statements = {s["Sid"]: s for s in document["Document"]["Statement"]}
    assert statements["ReachTargetAccounts"]["Resource"] in (
        "arn:aws:iam::222222222222:role/release-deployer",
        ["arn:aws:iam::222222222222:role/release-deployer"])


def test_the_operator_policy_puts_only_the_pipelines_source_objects(clean_sandbox,
                                                                    kiln_settings):
    """`invoke pipeline.push` puts (and tags) the S3 source object of each app's pipeline on
    CodePipeline: in the pipeline's artifact bucket, or in the bucket the config names."""
    config = engine_config()
    config["apps"]["billing"] = deep_merge(config["apps"]["hello-web"], {"pipeline": {
        "source": {"kind": "s3", "bucket": "billing-sources", "key": "billing/src.zip"}}})
    aws = connect(kiln_settings(**config), admin=True)
    (result,) = bootstrap.run(aws.settings, aws, yes=True, parts=("operator",))
    iam = aws.client("iam")
    arn = result["outputs"]["OperatorPolicyArn"]
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]
    pushes = {s["Sid"]: s for s in document["Document"]["Statement"]}["PushPipelineSources"]
    assert pushes["Action"] == ["s3:PutObject", "s3:PutObjectTagging"]
    assert sorted(pushes["Resource"]) == [
        "arn:aws:s3:::billing-sources/billing/src.zip",
        "arn:aws:s3:::kiln-pipeline-hello-web-artifactbucket-*/source/hello-web.zip"]


def test_second_run_is_up_to_date_and_leaves_no_change_sets(fresh):
    results = bootstrap.run(fresh.settings, fresh, yes=True, parts=PARTS)
    assert [r["action"] for r in results] == ["up-to-date", "up-to-date"]
    assert results[0]["outputs"]["LockTableName"] == "kiln-locks"
    cfn = fresh.client("cloudformation")
    assert cfn.list_change_sets(StackName="kiln-build")["Summaries"] == []


def test_dry_run_on_an_empty_account_creates_nothing(clean_sandbox, kiln_settings, capsys):
    aws = connect(kiln_settings(), admin=True)
    results = bootstrap.run(aws.settings, aws, dry_run=True, parts=PARTS)
    assert [r["action"] for r in results] == ["planned", "planned"]
    assert {"action": "Add", "logical_id": "RepoBucketPolicy", "type": "AWS::S3::BucketPolicy",
            "replacement": None} in results[0]["changes"]
    assert "Add     LockTable" in capsys.readouterr().err
    names = [s["StackName"] for s in aws.client("cloudformation").list_stacks()["StackSummaries"]
             if s["StackStatus"] != "DELETE_COMPLETE"]
    assert names == []
    assert aws.client("s3").list_buckets()["Buckets"] == []


def test_a_config_change_is_shown_then_applied_as_a_modify(fresh, kiln_settings):
    changed = connect(kiln_settings(bootstrap={"repo_read_cidrs": ["10.9.0.0/24"]}), admin=True)
    planned = bootstrap.run(changed.settings, changed, account="build", dry_run=True,
                            parts=PARTS)
    assert [(c["action"], c["logical_id"]) for c in planned[0]["changes"]] == [
        ("Modify", "RepoBucketPolicy")]
    bucket = stacks.output(fresh, "build", "RepoBucket")
    assert "10.9.0.0/24" not in fresh.client("s3").get_bucket_policy(Bucket=bucket)["Policy"]
    applied = bootstrap.run(changed.settings, changed, account="build", yes=True, parts=PARTS)
    assert applied[0]["action"] == "updated"
    assert "10.9.0.0/24" in fresh.client("s3").get_bucket_policy(Bucket=bucket)["Policy"]


def test_without_yes_and_without_a_terminal_it_refuses_and_leaves_nothing(clean_sandbox,
                                                                           kiln_settings):
    aws = connect(kiln_settings(), admin=True)
    with pytest.raises(KilnError, match="no terminal to confirm the change set on: run with"):
        bootstrap.run(aws.settings, aws, account="build", parts=PARTS)
    summaries = aws.client("cloudformation").list_stacks()["StackSummaries"]
    assert [s for s in summaries if s["StackStatus"] != "DELETE_COMPLETE"] == []


def test_answering_no_skips_the_stack(clean_sandbox, kiln_settings):
    aws = connect(kiln_settings(), admin=True)
    results = bootstrap.run(aws.settings, aws, account="prod", confirm=lambda question: False,
                            parts=PARTS)
    assert [r["action"] for r in results] == ["skipped"]
    with pytest.raises(KilnError, match="stack kiln-prod not found in account prod"):
        stacks.outputs(aws.admin("prod"), "prod")


def test_unknown_account_is_refused_with_the_known_ones(clean_sandbox, kiln_settings):
    aws = connect(kiln_settings(), admin=True)
    with pytest.raises(KilnError, match="unknown account 'staging': kiln.accounts lists build"):
        bootstrap.run(aws.settings, aws, account="staging", yes=True)


def test_missing_external_id_is_named(clean_sandbox, kiln_settings):
    aws = connect(kiln_settings(accounts={"prod": {"external_id": None}}), admin=True)
    with pytest.raises(KilnError, match=r"kiln.accounts.prod.external_id: not set"):
        bootstrap.run(aws.settings, aws, account="prod", yes=True, parts=PARTS)


def test_sandbox_dnf_reads_the_repo_anonymously_from_loopback(fresh, sandbox_box):
    bucket = stacks.output(fresh, "build", "RepoBucket")
    fresh.client("s3").put_object(Bucket=bucket, Key="el9/x86_64/repodata/repomd.xml",
                                  Body=b"<repomd/>")
    url = f"{sandbox_box.endpoint}/{bucket}/el9/x86_64/repodata/repomd.xml"
    with urllib.request.urlopen(url, timeout=10) as response:  # unsigned, like dnf
        assert response.read() == b"<repomd/>"


# -- copy regions -------------------------------------------------------------------------------


@pytest.fixture
def regional(clean_sandbox, kiln_settings):
    """A sandbox bootstrapped with kiln.bake.copy_regions [us-west-2]."""
    aws = connect(kiln_settings(bake={"copy_regions": [WEST]}), admin=True)
    bootstrap.run(aws.settings, aws, yes=True, parts=PARTS)
    return aws


def test_copy_regions_get_a_key_stack_in_every_account(clean_sandbox, kiln_settings, capsys):
    aws = connect(kiln_settings(bake={"copy_regions": [WEST, "us-east-1"]}), admin=True)
    results = bootstrap.run(aws.settings, aws, yes=True, parts=PARTS)
    assert [(r["stack"], r["account"], r["region"], r["action"]) for r in results] == [
        ("kiln-build", "build", "us-east-1", "created"),
        ("kiln-prod", "prod", "us-east-1", "created"),
        ("kiln-keys", "build", WEST, "created"), ("kiln-keys", "prod", WEST, "created")]
    shown = capsys.readouterr().err
    assert f"stack kiln-keys in account prod (222222222222), region {WEST}: create, 2 change(s)" \
        in shown
    for session in (aws, aws.admin("prod")):
        key = stacks.ami_key(session, WEST)
        assert key.startswith(f"arn:aws:kms:{WEST}:{session.account_id}:key/")
        assert key != stacks.ami_key(session) == stacks.output(
            session, "build" if session is aws else "prod", "AmiKmsKeyArn")
        aliases = session.client("kms", WEST).list_aliases()["Aliases"]
        assert {"alias/kiln-ami": key.rsplit("/", 1)[1]}.items() <= \
            {a["AliasName"]: a.get("TargetKeyId") for a in aliases}.items()
    # The build account's key there lets prod use it, as the main region's does.
    policy = aws.client("kms", WEST).get_key_policy(KeyId=stacks.ami_key(aws, WEST),
                                                   PolicyName="default")["Policy"]
    assert [s["Sid"] for s in json.loads(policy)["Statement"]] == [
        "AccountAdministers", "UsersUseKey", "UsersGrantToAwsServices"]
    assert "arn:aws:iam::222222222222:root" in policy

    again = bootstrap.run(aws.settings, aws, yes=True, parts=PARTS)
    assert [r["action"] for r in again] == ["up-to-date"] * 4
    assert "region us-west-2: up to date" in capsys.readouterr().err
    assert aws.client("cloudformation", WEST).list_change_sets(
        StackName="kiln-keys")["Summaries"] == []


def test_a_target_accounts_copy_region_key_lets_auto_scaling_launch(regional):
    role = ("arn:aws:iam::222222222222:role/aws-service-role/autoscaling.amazonaws.com/"
            "AWSServiceRoleForAutoScaling")
    prod = regional.admin("prod")
    policy = json.loads(prod.client("kms", WEST).get_key_policy(
        KeyId=stacks.ami_key(prod, WEST), PolicyName="default")["Policy"])
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert statements["AutoScalingUsesKey"]["Principal"]["AWS"] == role
    assert "kms:Decrypt" in statements["AutoScalingUsesKey"]["Action"]
    assert statements["AutoScalingAttachesVolumes"]["Action"] == "kms:CreateGrant"
    build = json.loads(regional.client("kms", WEST).get_key_policy(
        KeyId=stacks.ami_key(regional, WEST), PolicyName="default")["Policy"])
    assert "AutoScalingUsesKey" not in {s["Sid"] for s in build["Statement"]}


def test_verify_checks_the_keys_of_each_copy_region(regional):
    checks = verify.run(regional.settings, regional, parts=PARTS)
    assert [c.name for c in checks if not c.ok] == []
    assert [(c.account, c.name) for c in checks[-4:]] == [
        ("build", f"stack kiln-keys in {WEST}"),
        ("build", f"AMI key in {WEST} is shared with the target accounts only"),
        ("prod", f"stack kiln-keys in {WEST}"),
        ("prod", f"AMI key in {WEST} is used by the deployer role only")]
    prod_key = stacks.ami_key(regional.admin("prod"), WEST)
    regional.admin("prod").client("kms", WEST).put_key_policy(
        KeyId=prod_key, PolicyName="default", Policy=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Sid": "Admin", "Effect": "Allow",
                 "Principal": {"AWS": "arn:aws:iam::222222222222:root"},
                 "Action": "kms:*", "Resource": "*"}]}))
    assert problems(regional, "prod") == [
        f"key {prod_key}: the policy does not let the deployer role "
        f"arn:aws:iam::222222222222:role/kiln-deployer use it"]


def test_a_new_copy_region_is_missing_until_bootstrapped_again(regional, kiln_settings):
    added = connect(kiln_settings(bake={"copy_regions": [WEST, "eu-west-1"]}), admin=True)
    assert problems(added) == ["stack kiln-keys in eu-west-1 is missing: run `invoke bootstrap`"
                               ] * 2
    planned = bootstrap.run(added.settings, added, dry_run=True, parts=PARTS)
    assert [(r["stack"], r["region"], r["action"]) for r in planned] == [
        ("kiln-build", "us-east-1", "up-to-date"), ("kiln-prod", "us-east-1", "up-to-date"),
        ("kiln-keys", WEST, "up-to-date"), ("kiln-keys", "eu-west-1", "planned"),
        ("kiln-keys", WEST, "up-to-date"), ("kiln-keys", "eu-west-1", "planned")]
    with pytest.raises(KilnError, match=r"^no AMI key for account build in eu-west-1 \(stack "
                                        r"kiln-keys\): run `invoke bootstrap`$"):
        stacks.ami_key(added, "eu-west-1")


# -- verify -------------------------------------------------------------------------------------


def test_verify_passes_on_a_fresh_bootstrap(fresh):
    checks = verify.run(fresh.settings, fresh, parts=PARTS)
    assert [c.name for c in checks if not c.ok] == []
    assert len(checks) == 12


def test_verify_finds_the_ami_alias_past_the_first_page_of_aliases(clean_sandbox, kiln_settings):
    aws = connect(kiln_settings(), admin=True)
    kms = aws.admin("prod").client("kms")
    key = kms.create_key(Description="another tool's")["KeyMetadata"]["KeyId"]
    for number in range(60):  # another tool's aliases, listed before Kiln's
        kms.create_alias(AliasName=f"alias/other-tool-{number:02d}", TargetKeyId=key)
    bootstrap.run(aws.settings, aws, yes=True, parts=PARTS)
    assert kms.list_aliases()["Truncated"]
    assert problems(aws, "prod") == []


def test_verify_names_a_missing_stack(clean_sandbox, kiln_settings):
    aws = connect(kiln_settings(), admin=True)
    assert problems(aws, "build") == [
        "stack kiln-build is missing: run `invoke bootstrap`"]


def test_verify_names_every_problem_in_the_build_account(fresh):
    bucket = stacks.output(fresh, "build", "RepoBucket")
    key = stacks.output(fresh, "build", "AmiKmsKeyArn")
    s3, kms, ddb = fresh.client("s3"), fresh.client("kms"), fresh.client("dynamodb")
    s3.delete_public_access_block(Bucket=bucket)
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Sid": "Oops", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    s3.delete_bucket_encryption(Bucket=bucket)
    kms.put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Sid": "Admin", "Effect": "Allow",
             "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
             "Action": "kms:*", "Resource": "*"},
            {"Sid": "Stranger", "Effect": "Allow",
             "Principal": {"AWS": "arn:aws:iam::333333333333:root"},
             "Action": "kms:Decrypt", "Resource": "*"}]}))
    ddb.delete_table(TableName="kiln-locks")
    ddb.create_table(TableName="kiln-locks", BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "Id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "Id", "AttributeType": "S"}])

    found = problems(fresh, "build")
    assert f"bucket {bucket}: public access block BlockPublicPolicy is off" in found
    assert (f"bucket {bucket}: policy statement Oops grants s3:GetObject to everyone "
            f"(Principal *) without a restricting condition") in found
    assert (f"bucket {bucket}: the policy does not let arn:aws:iam::123456789012:role/kiln-bake "
            f"s3:GetObject") in found
    assert f"bucket {bucket}: versioning is Suspended" in found
    assert f"bucket {bucket}: default encryption is off" in found
    assert (f"key {key}: statement Stranger grants account 333333333333, which is not a Kiln "
            f"target account") in found
    assert any(p.startswith(f"key {key}: account 222222222222 may not use it") for p in found)
    assert any(p.startswith("lock table kiln-locks: key is [('Id', 'HASH')]") for p in found)
    assert ("lock table kiln-locks: time to live on ExpiresAt is off, so stale leases stay"
            in found)
    assert len(found) == 12  # the four public access block flags count one each


def test_verify_names_every_problem_in_a_trust_policy(fresh):
    fresh.admin("prod").client("iam").update_assume_role_policy(
        RoleName="kiln-deployer", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Sid": "Anyone", "Effect": "Allow", "Principal": {"AWS": "*"},
             "Action": "sts:AssumeRole"},
            {"Sid": "Stranger", "Effect": "Allow",
             "Principal": {"AWS": "arn:aws:iam::999999999999:root"}, "Action": "sts:AssumeRole",
             "Condition": {"StringEquals": {"sts:ExternalId": "guessable"}}}]}))
    where = "role arn:aws:iam::222222222222:role/kiln-deployer: trust statement"
    assert problems(fresh, "prod") == [
        f"{where} Anyone lets anyone (Principal *) assume it",
        f"{where} Anyone has no sts:ExternalId condition",
        f"{where} Stranger trusts arn:aws:iam::999999999999:root, outside the build account "
        f"123456789012",
        f"{where} Stranger expects another external id than kiln.accounts.prod.external_id"]


def test_verify_proves_the_deployer_rights_by_policy_simulation(fresh):
    """iam:SimulatePrincipalPolicy, with each deploy call's resource and condition keys: a
    deployer policy that lost its tag-scoped statements is named before a deploy meets it."""
    iam = fresh.admin("prod").client("iam")
    document = iam.get_role_policy(RoleName="kiln-deployer",
                                   PolicyName="deploy-server-groups")["PolicyDocument"]
    document["Statement"] = [s for s in document["Statement"]
                             if s.get("Sid") not in ("CreateTagged", "ChangeKilnServerGroups")]
    iam.put_role_policy(RoleName="kiln-deployer", PolicyName="deploy-server-groups",
                        PolicyDocument=json.dumps(document))
    found = problems(fresh, "prod")
    group = ("arn:aws:autoscaling:us-east-1:222222222222:autoScalingGroup:*:"
             "autoScalingGroupName/web-v001")
    assert (f"role arn:aws:iam::222222222222:role/kiln-deployer may not "
            f"autoscaling:CreateAutoScalingGroup on {group} (implicitDeny)") in found
    assert any("ec2:DeleteLaunchTemplate" in p for p in found)
    assert not any("ModifyListener" in p or "PassRole" in p for p in found)


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_bootstrap_then_verify(clean_sandbox, run_invoke):
    refused = run_invoke("bootstrap")
    assert refused.returncode == 1
    assert "kiln: no terminal to confirm the change set on" in refused.stderr
    created = run_invoke("bootstrap", "--yes", "--json", check=True)
    assert "target: sandbox" in created.stderr
    actions = {r["stack"]: r["action"] for r in json.loads(created.stdout)}
    assert actions["kiln-build"] == actions["kiln-prod"] == "created"
    again = run_invoke("bootstrap.apply", "--yes", check=True)
    assert "stack kiln-build in account build (123456789012): up to date" in again.stderr
    checked = run_invoke("bootstrap.verify", "--json", check=True)
    assert "✓ [prod] deployer role trusts only account 123456789012" in checked.stderr
    assert json.loads(checked.stdout)["ok"] is True


def test_cli_verify_fails_with_a_line_per_problem(clean_sandbox, run_invoke, kiln_settings):
    run_invoke("bootstrap", "--yes", check=True)
    aws = connect(kiln_settings(), admin=True)
    bucket = stacks.output(aws, "build", "RepoBucket")
    aws.client("s3").put_bucket_versioning(Bucket=bucket,
                                           VersioningConfiguration={"Status": "Suspended"})
    result = run_invoke("bootstrap.verify", "--account", "build")
    assert result.returncode == 1
    assert f"✗ [build] repo bucket {bucket} keeps versions" in result.stderr
    assert f"    bucket {bucket}: versioning is Suspended" in result.stderr
    assert "kiln: bootstrap.verify: 1 problem(s) in 1 check(s)" in result.stderr


def test_unsigned_reads_are_refused_without_the_loopback_grant(fresh, sandbox_box, kiln_settings):
    """The policy, not moto's defaults, is what lets dnf in: without a bucket policy, 403."""
    bucket = stacks.output(fresh, "build", "RepoBucket")
    s3 = fresh.client("s3")
    s3.put_object(Bucket=bucket, Key="private", Body=b"x")
    s3.delete_bucket_policy(Bucket=bucket)
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{sandbox_box.endpoint}/{bucket}/private", timeout=10)
    assert denied.value.code == 403
