"""The support infrastructure as CloudFormation stacks, created and updated through change sets.

A stack is described once in STACKS (its part name, the accounts and regions it goes to, its
template file and a function computing its parameters); `invoke bootstrap` turns each into a change
set — CREATE for a new stack, UPDATE for an existing one —, shows it, and executes it once
confirmed. A change set with nothing in it means the stack is up to date. Other areas add their
stacks with `register`.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from botocore.exceptions import ClientError, WaiterError

from cloud import tags as kiln_tags
from cloud.aws import Aws, account_spec
from cloud.console import say
from cloud.errors import KilnError
from cloud.settings import Settings
from cloud.stacks import stack_name

TEMPLATES = Path(__file__).resolve().parent.parent / "cloud" / "templates"
POLICIES = Path(__file__).resolve().parent.parent / "cloud" / "policies"
CAPABILITIES = ["CAPABILITY_NAMED_IAM"]
# Change sets and stacks take seconds to minutes on AWS; the sandbox answers at once.
WAIT = {"Delay": 5, "MaxAttempts": 720}
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
STACK_TAG = "kiln:stack"


class NotYet(KilnError):
    """A stack's parameters come from outputs of another stack (its name) that it does not have
    yet: that stack is new, or its update adds them."""


@dataclass(frozen=True)
class Place:
    """Where one stack goes: the account, a session allowed to bootstrap it, the build session,
    the region."""

    settings: Settings
    account: str
    aws: Aws
    build: Aws
    region: str

    @property
    def where(self) -> str:
        """`account prod (222222222222)`, and the region when it is not the main one."""
        text = f"account {self.account} ({self.aws.account_id})"
        if self.region == self.settings.aws.region:
            return text
        return f"{text}, region {self.region}"

    def client(self, service: str):
        return self.aws.client(service, self.region)


def main_region(settings: Settings) -> list[str]:
    return [settings.aws.region]


@dataclass(frozen=True)
class StackSpec:
    """One bootstrap stack. `part` may use {app}; `accounts` names the accounts it goes to,
    `regions` the regions (the main region, kiln.aws.region, unless told otherwise)."""

    part: str
    template: str
    accounts: Callable[[Settings], list[str]]
    parameters: Callable[[Place], dict[str, str]]
    outputs: tuple[str, ...] = ()
    regions: Callable[[Settings], list[str]] = main_region
    render: Callable[[], str] | None = None  # builds the template instead of reading it
    # builds it from the settings (a template of the app's own shape)
    render_for: Callable[[Settings], str] | None = None
    # What must exist before the stack is created or updated, made outside it (not on --dry-run)
    prepare: Callable[[Place], None] | None = None
    # The template adjusted to what Kiln changed outside the stack, for an update that would
    # otherwise set it back: (place, stack name, template, changes) -> template
    live: Callable[[Place, str, str, list[dict]], str] | None = None

    def name(self, settings: Settings) -> str:
        return stack_name(settings, self.part_for(settings))

    def part_for(self, settings: Settings) -> str:
        return self.part.format(app=settings.app)

    def body(self, settings: Settings | None = None) -> str:
        if self.render_for is not None and settings is not None:
            return self.render_for(settings)
        if self.render is not None:
            return self.render()
        return (TEMPLATES / self.template).read_text()


@dataclass
class Plan:
    """A change set waiting to be executed (or nothing to do, when `changes` is empty)."""

    spec: StackSpec
    place: Place
    stack: str
    kind: str  # CREATE or UPDATE
    change_set: str | None
    changes: list[dict] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return self.change_set is None

    @property
    def cfn(self):
        return self.place.client("cloudformation")


# -- the stacks --------------------------------------------------------------------------------


def build_account(settings: Settings) -> list[str]:
    return [settings.build_account]


def other_accounts(settings: Settings) -> list[str]:
    return [name for name in settings.accounts if name != settings.build_account]


def all_accounts(settings: Settings) -> list[str]:
    return [settings.build_account, *other_accounts(settings)]


def copy_regions(settings: Settings) -> list[str]:
    """The regions images are copied to (kiln.bake.copy_regions), the main region left out."""
    return [r for r in dict.fromkeys(settings.bake.copy_regions) if r != settings.aws.region]


def partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    return "aws-us-gov" if region.startswith("us-gov-") else "aws"


def share_account_roots(settings: Settings, region: str) -> list[str]:
    """The root ARNs of the accounts images are shared with: they may use the build AMI keys."""
    return [f"arn:{partition(region)}:iam::{settings.accounts[name].id}:root"
            for name in other_accounts(settings)]


def deployer_role_arn(settings: Settings, account: str, region: str) -> str:
    spec = account_spec(settings, account)
    return f"arn:{partition(region)}:iam::{spec.id}:role/{spec.role or 'kiln-deployer'}"


def build_parameters(place: Place) -> dict[str, str]:
    settings = place.settings
    boot = settings.bootstrap
    return {
        "Prefix": settings.stacks.prefix,
        "ShareAccountRoots": ",".join(share_account_roots(settings, place.region)),
        "ShareAccountIds": ",".join(settings.accounts[name].id
                                    for name in other_accounts(settings)),
        "RepoReadVpces": ",".join(boot.repo_read_vpces),
        "RepoReadCidrs": ",".join(boot.repo_read_cidrs),
        "BakeVpcCidr": boot.bake_vpc_cidr,
        "BakeSubnetCidr": boot.bake_subnet_cidr,
        "PipelineSubnetCidr": boot.pipeline_subnet_cidr if pipeline_apps(settings) else "",
        "LogRetentionDays": str(boot.log_retention_days),
        "RepoKeyFingerprint": repo_key_fingerprint(settings),
    }


def pipeline_apps(settings: Settings) -> list[str]:
    """The apps whose pipeline runs on CodePipeline (orchestrator/codepipeline.py)."""
    from orchestrator import codepipeline  # it registers its stacks here: imported late

    return codepipeline.engine_apps(settings)


def repo_key_fingerprint(settings: Settings) -> str:
    """The fingerprint bootstrap records as the repository's pin: kiln.repo.key_fingerprint when
    set, else that of the signing key (kiln.repo.gpg_key); empty for an unsigned repository."""
    from packager import signing  # the signing key is the packager's; bootstrap only records it

    repo = settings.repo
    if repo.key_fingerprint:
        return signing.check_fingerprint(repo.key_fingerprint, "kiln.repo.key_fingerprint")
    signer = signing.from_settings(settings)
    return signer.fingerprint() if signer else ""


def account_parameters(place: Place) -> dict[str, str]:
    settings = place.settings
    spec = account_spec(settings, place.account)
    if not spec.external_id:
        raise KilnError(f"kiln.accounts.{place.account}.external_id: not set; the deployer "
                        f"role in account {place.account} is only assumable with one")
    principals = settings.bootstrap.operator_principals
    if not principals:
        raise KilnError("kiln.bootstrap.operator_principals: empty; name the build account's "
                        "identities that run Kiln's tasks (ARNs such as arn:aws:iam::"
                        f"{account_spec(settings, settings.build_account).id}:role/kiln-ci), "
                        f"the only ones the deployer role in account {place.account} trusts")
    build_id = account_spec(settings, settings.build_account).id
    return {
        "Prefix": settings.stacks.prefix,
        "BuildAccountId": build_id,
        "ExternalId": spec.external_id,
        "DeployerRoleName": spec.role or "kiln-deployer",
        "OperatorPrincipals": ",".join([*principals, *pipeline_principals(
            settings, partition(place.region), build_id)]),
    }


def pipeline_principals(settings: Settings, partition_name: str, build_id: str) -> list[str]:
    """The CodeBuild roles of the apps' pipelines on CodePipeline, which deploy like operators."""
    from orchestrator import codepipeline

    return [codepipeline.project_role_pattern(settings, app, partition_name, build_id)
            for app in codepipeline.engine_apps(settings)]


AUTO_SCALING = "autoscaling.amazonaws.com"
AUTO_SCALING_ROLE = "AWSServiceRoleForAutoScaling"


def ensure_auto_scaling_role(place: Place) -> None:
    """Auto Scaling's service-linked role, which the account's AMI key policy names. Every
    account that ever had an Auto Scaling group has it and IAM refuses a second one ("has been
    taken in this account"), so it is made here, only where missing, and never by the stack
    (which would also delete it with the stack). Needs iam:GetRole on the role and
    iam:CreateServiceLinkedRole for autoscaling.amazonaws.com."""
    iam = place.client("iam")
    try:
        iam.get_role(RoleName=AUTO_SCALING_ROLE)
        return
    except ClientError as error:
        if error.response["Error"]["Code"] != "NoSuchEntity":
            raise
    try:
        iam.create_service_linked_role(AWSServiceName=AUTO_SCALING)
    except ClientError as error:
        if "has been taken" not in str(error):  # made meanwhile (a first group): fine
            raise
    say(f"service-linked role {AUTO_SCALING_ROLE} in {place.where}: created")


def keys_parameters(place: Place) -> dict[str, str]:
    """The build account's key is used by the accounts it shares with; a target account's key
    by its deployer role (made by the account stack in the main region)."""
    settings = place.settings
    target = place.account != settings.build_account
    if target:
        users = [deployer_role_arn(settings, place.account, place.region)]
    else:
        users = share_account_roots(settings, place.region)
    return {"Prefix": settings.stacks.prefix, "KeyUsers": ",".join(users),
            "LaunchesServerGroups": "true" if target else "false"}


def ensure_target_auto_scaling_role(place: Place) -> None:
    """Before a target account's key names Auto Scaling's role (ensure_auto_scaling_role)."""
    if place.account != place.settings.build_account:
        ensure_auto_scaling_role(place)


def _substituted(value):
    """Policy text with ${Prefix}, ${AWS::AccountId}… as CloudFormation Fn::Sub values."""
    if isinstance(value, str):
        return {"Fn::Sub": value} if "${" in value else value
    if isinstance(value, list):
        return [_substituted(item) for item in value]
    if isinstance(value, dict):
        return {key: _substituted(item) for key, item in value.items()}
    return value


DEPLOYER_ROLES = "${DeployerRoleArns}"  # in operator.json: the deployer roles, a parameter
# In operator.json: the S3 source objects of the apps' pipelines (pipeline.push), a parameter.
PIPELINE_SOURCES = "${PipelineSourceObjects}"


def operator_template() -> str:
    """The operator's day-to-day policy (cloud/policies/operator.json) as a managed policy
    `<prefix>-operator`, to attach to the people and CI roles that run Kiln's tasks."""
    document = json.loads((POLICIES / "operator.json").read_text())
    for statement in document["Statement"]:
        if statement.get("Resource") == DEPLOYER_ROLES:
            statement["Resource"] = {"Ref": "DeployerRoleArns"}
        if statement.get("Resource") == PIPELINE_SOURCES:
            statement["Resource"] = {"Ref": "PipelineSourceObjects"}
    return json.dumps({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "Kiln operator policy: what day-to-day tasks need in the build account. "
                       "Managed by `invoke bootstrap`.",
        "Parameters": {"Prefix": {"Type": "String", "Default": "kiln",
                                  "AllowedPattern": "[a-z][a-z0-9-]{1,20}"},
                       "DeployerRoleArns": {"Type": "CommaDelimitedList",
                                            "Description": "The deployer roles the operator "
                                                           "assumes (kiln.accounts.<name>.role)"},
                       "PipelineSourceObjects": {
                           "Type": "CommaDelimitedList",
                           "Description": "The S3 source objects of the apps' pipelines on "
                                          "CodePipeline, which `invoke pipeline.push` puts"}},
        "Resources": {"OperatorPolicy": {"Type": "AWS::IAM::ManagedPolicy", "Properties": {
            "ManagedPolicyName": {"Fn::Sub": "${Prefix}-operator"},
            "Description": "Kiln's day-to-day tasks (bake, publish, share, promote, deploy)",
            "PolicyDocument": _substituted(document)}}},
        "Outputs": {"OperatorPolicyArn": {"Value": {"Ref": "OperatorPolicy"}}},
    }, indent=1)


def operator_parameters(place: Place) -> dict[str, str]:
    """The deployer role of every other account, as configured (kiln.accounts.<name>.role)."""
    settings = place.settings
    roles = [deployer_role_arn(settings, name, place.region) for name in other_accounts(settings)]
    none = f"arn:{partition(place.region)}:iam::*:role/{settings.stacks.prefix}-deployer"
    return {"Prefix": settings.stacks.prefix, "DeployerRoleArns": ",".join(roles) or none,
            "PipelineSourceObjects": ",".join(pipeline_sources(settings, place.region))}


def pipeline_sources(settings: Settings, region: str) -> list[str]:
    """What `invoke pipeline.push` puts; with no S3 source, a name no bucket has (an S3
    bucket's name never holds an upper-case letter), as a policy names at least one."""
    from orchestrator import codepipeline

    part = partition(region)
    return codepipeline.source_objects(settings, part) or [f"arn:{part}:s3:::NO-SOURCE/none"]


BUILD_OUTPUTS = ("RepoBucket", "AmiKmsKeyArn", "AmiKmsAliasName", "BakeInstanceProfileName",
                 "BakeRoleArn", "LockTableName", "HistoryTableName", "PipelineTopicArn",
                 "LogGroupName", "BakeVpcId", "BakeSubnetId")
ACCOUNT_OUTPUTS = ("DeployerRoleArn", "AmiKmsKeyArn", "AutoScalingRoleArn")
KEYS_OUTPUTS = ("AmiKmsKeyArn", "AmiKmsAliasName")

STACKS: list[StackSpec] = [
    StackSpec("build", "build.yaml", build_account, build_parameters, BUILD_OUTPUTS),
    StackSpec("operator", "operator.json", build_account, operator_parameters,
              ("OperatorPolicyArn",), render=operator_template),
    StackSpec("prod", "account.yaml", other_accounts, account_parameters, ACCOUNT_OUTPUTS,
              prepare=ensure_auto_scaling_role),
    # The AMI key of every account in every copy region; the main region's is in the stacks above.
    StackSpec("keys", "keys.yaml", all_accounts, keys_parameters, KEYS_OUTPUTS, copy_regions,
              prepare=ensure_target_auto_scaling_role),
]


def register(spec: StackSpec) -> StackSpec:
    """Add a stack to `invoke bootstrap` (e.g. an app environment, part "env-{app}")."""
    if all(existing.part != spec.part for existing in STACKS):
        STACKS.append(spec)
    return spec


# -- choosing what to bootstrap ----------------------------------------------------------------


def targets(settings: Settings, account: str | None,
            parts: tuple[str, ...] | None = None) -> list[tuple[StackSpec, str, str]]:
    """(stack, account name, region) for `--account` (an account name, or "all"/None),
    optionally only the stacks of the given parts."""
    wanted = account or "all"
    if wanted != "all":
        account_spec(settings, wanted)  # an unknown name fails with the known ones
    found = []
    for spec in STACKS:
        if parts is not None and spec.part not in parts:
            continue
        for name in spec.accounts(settings):
            if wanted in ("all", name):
                found += [(spec, name, region) for region in spec.regions(settings)]
    return found


def place_for(settings: Settings, build: Aws, account: str, region: str | None = None) -> Place:
    session = build if account == build.account_name else build.admin(account)
    return Place(settings, account, session, build, region or settings.aws.region)


# -- change sets -------------------------------------------------------------------------------


def stack_tags(settings: Settings, spec: StackSpec) -> dict[str, str]:
    return {kiln_tags.MANAGED_BY: "kiln", kiln_tags.ROLE: "bootstrap",
            STACK_TAG: spec.part_for(settings)}


def existing_status(cfn, name: str) -> str | None:
    try:
        return cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
    except ClientError as error:
        if "does not exist" in str(error):
            return None
        raise


def change_set_kind(cfn, name: str, place: Place) -> str:
    status = existing_status(cfn, name)
    if status in (None, "REVIEW_IN_PROGRESS"):
        return "CREATE"
    if status in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED"):
        raise KilnError(f"stack {name} in {place.where} is {status}: delete it (aws "
                        f"cloudformation delete-stack --stack-name {name} --region "
                        f"{place.region}) and run again")
    if status.endswith("_IN_PROGRESS"):
        raise KilnError(f"stack {name} in {place.where} is busy ({status}): try again later")
    return "UPDATE"


def plan(spec: StackSpec, place: Place, run_id: str) -> Plan:
    """Create the change set for one stack and read what it would change. A stack whose
    resources Kiln changes outside it (`live`) gets a second change set when the first would
    update one of those: the template then states what is live, so the update keeps it."""
    body = spec.body(place.settings)
    result = _change_set(spec, place, run_id, body)
    if spec.live is None or result.kind != "UPDATE" or not result.changes:
        return result
    adjusted = spec.live(place, result.stack, body, result.changes)
    if adjusted == body:
        return result
    discard(result)
    return _change_set(spec, place, run_id, adjusted, "-live")


def _change_set(spec: StackSpec, place: Place, run_id: str, body: str, suffix: str = "") -> Plan:
    settings = place.settings
    name = spec.name(settings)
    cfn = place.client("cloudformation")
    kind = change_set_kind(cfn, name, place)
    parameters = spec.parameters(place)
    created = cfn.create_change_set(
        StackName=name, ChangeSetName=f"kiln-{run_id}{suffix}", ChangeSetType=kind,
        TemplateBody=body, Capabilities=CAPABILITIES,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Tags=kiln_tags.to_list(stack_tags(settings, spec)),
        Description=f"invoke bootstrap, run {run_id}")
    result = Plan(spec, place, name, kind, created["Id"])
    try:
        cfn.get_waiter("change_set_create_complete").wait(
            ChangeSetName=created["Id"], StackName=name, WaiterConfig=WAIT)
    except WaiterError as error:
        reason = (error.last_response or {}).get("StatusReason", str(error))
        if any(marker in reason for marker in NO_CHANGES):
            cfn.delete_change_set(ChangeSetName=created["Id"], StackName=name)
            result.change_set = None
            return result
        discard(result)
        raise KilnError(f"change set for stack {name} in {place.where} failed: {reason}"
                        ) from None
    result.changes = read_changes(cfn, created["Id"], name)
    return result


def read_changes(cfn, change_set: str, name: str) -> list[dict]:
    changes, token = [], None
    while True:
        extra = {"NextToken": token} if token else {}
        page = cfn.describe_change_set(ChangeSetName=change_set, StackName=name, **extra)
        for change in page.get("Changes", []):
            resource = change.get("ResourceChange", {})
            changes.append({"action": resource.get("Action"),
                            "logical_id": resource.get("LogicalResourceId"),
                            "type": resource.get("ResourceType"),
                            "replacement": resource.get("Replacement")})
        token = page.get("NextToken")
        if not token:
            return changes


def show(plan: Plan) -> None:
    where = plan.place.where
    if plan.up_to_date:
        say(f"stack {plan.stack} in {where}: up to date")
        return
    verb = "create" if plan.kind == "CREATE" else "update"
    say(f"stack {plan.stack} in {where}: {verb}, {len(plan.changes)} change(s)")
    for change in plan.changes:
        replacement = change["replacement"] or "-"
        say(f"  {change['action']:<7} {change['logical_id']:<28} {change['type']:<38} "
            f"replacement: {replacement}")
    if not plan.changes:
        say("  (parameters, tags or outputs only)")


def apply(plan: Plan) -> dict[str, str]:
    """Execute the change set, wait for the stack, and return its outputs."""
    cfn = plan.cfn
    cfn.execute_change_set(ChangeSetName=plan.change_set, StackName=plan.stack)
    _wait(cfn, plan, "stack_create_complete" if plan.kind == "CREATE" else "stack_update_complete")
    plan.place.aws.__dict__.pop("_stack_outputs", None)  # cloud.stacks reads them afresh
    return outputs(cfn, plan.stack)


# What an update must not delete when a newer template leaves it out: a service-linked role
# (older account stacks made Auto Scaling's; the account's key policy names it and the service
# uses it).
RETAINED_TYPES = ("AWS::IAM::ServiceLinkedRole",)


def retain_dropped(current: Plan) -> Plan:
    """An update that removes a resource of RETAINED_TYPES would delete it: first update the
    stack with its own template plus DeletionPolicy Retain on those, then plan again, so the
    update only lets go of them."""
    dropped = [c["logical_id"] for c in current.changes
               if c["action"] == "Remove" and c["type"] in RETAINED_TYPES]
    if current.kind != "UPDATE" or not dropped:
        return current
    cfn = current.cfn
    deployed = cfn.get_template(StackName=current.stack,
                                TemplateStage="Original")["TemplateBody"]
    body = with_retain(deployed, dropped)
    if body is None:
        return current  # Retain already
    discard(current)
    stack = cfn.describe_stacks(StackName=current.stack)["Stacks"][0]
    cfn.update_stack(StackName=current.stack, TemplateBody=body, Capabilities=CAPABILITIES,
                     Parameters=[{"ParameterKey": p["ParameterKey"], "UsePreviousValue": True}
                                 for p in stack.get("Parameters", [])],
                     Tags=stack.get("Tags", []))
    _wait(cfn, current, "stack_update_complete")
    say(f"stack {current.stack} in {current.place.where}: {', '.join(dropped)} set to "
        f"DeletionPolicy Retain, so the update keeps it in the account")
    return plan(current.spec, current.place, kiln_tags.new_run_id())


def with_retain(template, logical_ids: list[str]) -> str | None:
    """The deployed template (JSON as a dict, or YAML text) with DeletionPolicy Retain on each
    of `logical_ids`; None when they all have it already."""
    if isinstance(template, dict):
        resources = template.get("Resources", {})
        todo = [i for i in logical_ids if resources.get(i, {}).get("DeletionPolicy") != "Retain"]
        for logical_id in todo:
            resources[logical_id]["DeletionPolicy"] = "Retain"
        return json.dumps(template) if todo else None
    changed = template
    for logical_id in logical_ids:
        match = re.search(rf"^(?P<indent>[ ]+){re.escape(logical_id)}:[ \t]*\n", changed, re.M)
        if match is None:
            raise KilnError(f"stack template: cannot find resource {logical_id} to retain it")
        block = changed[match.end():].split("\n\n", 1)[0]
        if re.search(r"^\s+DeletionPolicy:\s*Retain\s*$", block, re.M):
            continue
        policy = f"{match.group('indent')}  DeletionPolicy: Retain\n"
        changed = changed[:match.end()] + policy + changed[match.end():]
    return None if changed == template else changed


def _wait(cfn, plan: Plan, waiter: str) -> None:
    try:
        cfn.get_waiter(waiter).wait(StackName=plan.stack, WaiterConfig=WAIT)
    except WaiterError as error:
        status = (error.last_response or {}).get("Stacks", [{}])[0].get("StackStatus", "?")
        raise KilnError(f"stack {plan.stack} in {plan.place.where} ended {status}: see its "
                        f"events (aws cloudformation describe-stack-events --stack-name "
                        f"{plan.stack} --region {plan.place.region})") from None


def discard(plan: Plan) -> None:
    """Delete the change set; a stack that only existed for it goes too, so nothing is left."""
    if plan.change_set is None:
        return
    plan.cfn.delete_change_set(ChangeSetName=plan.change_set, StackName=plan.stack)
    if plan.kind == "CREATE" and existing_status(plan.cfn, plan.stack) == "REVIEW_IN_PROGRESS":
        plan.cfn.delete_stack(StackName=plan.stack)
    plan.change_set = None


def outputs(cfn, name: str) -> dict[str, str]:
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


# -- the whole run -----------------------------------------------------------------------------


def ask(question: str) -> bool:
    """Ask on the terminal; without one, refuse rather than guess."""
    if not sys.stdin.isatty():
        raise KilnError("no terminal to confirm the change set on: run with --yes to apply "
                        "it, or --dry-run to only show it")
    sys.stderr.write(f"{question} [y/N] ")  # stdout is kept for --json
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def run(settings: Settings, build: Aws, account: str | None = None, dry_run: bool = False,
        yes: bool = False, confirm: Callable[[str], bool] = ask,
        parts: tuple[str, ...] | None = None) -> list[dict]:
    """Bring every selected stack up to date; one result per stack."""
    run_id = kiln_tags.new_run_id()
    results = []
    for spec, name, region in targets(settings, account, parts):
        place = place_for(settings, build, name, region)
        try:
            current = plan(spec, place, run_id)
        except NotYet as missing:
            results.append(_after(spec, place, str(missing), dry_run))
            continue
        show(current)
        results.append(_settle(current, dry_run, yes, confirm))
    return results


def _after(spec: StackSpec, place: Place, missing: str, dry_run: bool) -> dict:
    """A stack planned after the stack it reads (a dry run on a new account): listed, no change
    set; outside a dry run the other stack was just refused or skipped, so it is an error."""
    stack = spec.name(place.settings)
    if not dry_run:
        raise KilnError(f"stack {stack} in {place.where} needs outputs of stack {missing}, "
                        f"which it does not have: apply that stack's change set first (`invoke "
                        f"bootstrap`)")
    say(f"stack {stack} in {place.where}: planned after stack {missing} (whose outputs are "
        f"parameters of this one)")
    return {"stack": stack, "account": place.account, "account_id": place.aws.account_id,
            "region": place.region, "changes": [], "action": "planned", "after": missing}


def _settle(current: Plan, dry_run: bool, yes: bool, confirm: Callable[[str], bool]) -> dict:
    place = current.place
    stack = f"{current.stack} in {place.where}"
    result = {"stack": current.stack, "account": place.account,
              "account_id": place.aws.account_id, "region": place.region,
              "changes": current.changes}
    if current.up_to_date:
        if not dry_run and current.spec.prepare is not None:
            current.spec.prepare(place)
        return {**result, "action": "up-to-date",
                "outputs": outputs(current.cfn, current.stack)}
    if dry_run:
        discard(current)
        say(f"stack {stack}: dry run, change set deleted, nothing changed")
        return {**result, "action": "planned"}
    try:
        approved = yes or confirm(f"apply these changes to stack {stack}?")
    except BaseException:
        discard(current)
        raise
    if not approved:
        discard(current)
        say(f"stack {stack}: not applied")
        return {**result, "action": "skipped"}
    if current.spec.prepare is not None:
        current.spec.prepare(place)
    current = retain_dropped(current)
    values = apply(current)
    say(f"stack {stack}: {'created' if current.kind == 'CREATE' else 'updated'}")
    for key, value in sorted(values.items()):
        say(f"  {key:<24} {value}")
    return {**result, "action": "created" if current.kind == "CREATE" else "updated",
            "outputs": values}
