"""CloudFormation in the sandbox as documented for AWS, on the resources Kiln's stacks use.

moto's CloudFormation creates many resources but drops parts of them. This patch makes it honour:

- `AWS::S3::Bucket`: VersioningConfiguration, PublicAccessBlockConfiguration and
  NotificationConfiguration's EventBridgeConfiguration (moto keeps only BucketEncryption and
  Tags), on create and on update.
- `AWS::S3::BucketPolicy`: moto skips it with a warning; here it is a real resource, created,
  updated and deleted with its stack (AWS::CloudWatch::Alarm: see cfn_alarms).
- `AWS::KMS::Key`: a KeyPolicy given as an object (CloudFormation's usual form, moto wants a JSON
  string), Tags as Key/Value, and updates of the policy, description and rotation.
- `AWS::DynamoDB::Table`: TimeToLiveSpecification.
- `AWS::ElasticLoadBalancingV2::LoadBalancer`: LoadBalancerAttributes (moto dropped them).
- `AWS::IAM::Role`: inline Policies are kept as JSON text, as a PutRolePolicy keeps them, so
  GetRolePolicy answers a policy document (moto answered the Python text of a dict); a stack
  update changes the role's inline Policies and trust policy (moto kept the old ones).
- Change sets: a stack created or updated through ExecuteChangeSet gets its Outputs, parameters,
  tags and (on EC2 resources) propagated stack tags, as a stack made by CreateStack does, and its
  change sets are removed, as AWS does after an execution; a change
  set with nothing to change is created with Status FAILED ("didn't contain changes") instead of
  CreateChangeSet answering an error; a change of parameters lists the resources that use them
  (through Ref or Fn::Sub) as Modify; a resource whose Condition is false is not updated (moto
  failed the whole update on it), and one whose Condition became true is created.
- Stack updates in CloudFormation's order: new and changed resources are created or updated in
  dependency order (DependsOn, Ref, Fn::GetAtt, Fn::Sub), and resources the template no longer
  has are deleted last, in the cleanup phase. moto deleted first, then created every new
  resource, then updated the changed ones: an update that moves a listener off a port for a new
  one to take it over worked there and fails on AWS without its DependsOn.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sandbox.aws import persistence, seams

NO_CHANGES = ("The submitted information didn't contain changes. Submit different information "
              "to create a change set.")


def apply(state_dir: Path) -> None:
    _patch_bucket()
    _patch_kms_key()
    _patch_table()
    _patch_load_balancer()
    _patch_role_policies()
    _add_models()
    _patch_change_sets()
    _patch_update_order()
    _patch_stack_resources()


# -- S3 buckets -------------------------------------------------------------------------------


def _apply_bucket_properties(bucket_name: str, properties: dict, account_id: str,
                             region_name: str) -> None:
    from moto.s3.models import s3_backends
    from moto.utilities.utils import get_partition

    backend = s3_backends[account_id][get_partition(region_name)]
    versioning = properties.get("VersioningConfiguration")
    if versioning:
        backend.put_bucket_versioning(bucket_name, versioning["Status"])
    block = properties.get("PublicAccessBlockConfiguration")
    if block:
        flags = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                 "RestrictPublicBuckets")
        backend.put_public_access_block(
            bucket_name, {flag: _bool(block.get(flag, False)) for flag in flags})
    elif "PublicAccessBlockConfiguration" not in properties:
        bucket = backend.get_bucket(bucket_name)
        bucket.public_access_block = None
    _apply_bucket_notifications(backend, bucket_name, properties)


def _apply_bucket_notifications(backend, bucket_name: str, properties: dict) -> None:
    """NotificationConfiguration's EventBridgeConfiguration: the bucket's events go to
    EventBridge (sandbox.aws.events.delivery). Its Lambda, queue and topic configurations are
    not made here."""
    found = (properties.get("NotificationConfiguration") or {}).get("EventBridgeConfiguration")
    enabled = found is not None and _bool(found.get("EventBridgeEnabled", True))
    bucket = backend.get_bucket(bucket_name)
    if bucket.notification_configuration is not None:
        bucket.notification_configuration.event_bridge = {} if enabled else None
    elif enabled:
        backend.put_bucket_notification_configuration(bucket_name,
                                                      {"EventBridgeConfiguration": {}})


def _patch_bucket() -> None:
    from moto.s3.models import FakeBucket

    def creating(moto):
        create = moto.__func__

        def create_bucket(cls, resource_name, cloudformation_json, account_id, region_name,
                          **kwargs):
            bucket = create(cls, resource_name, cloudformation_json, account_id, region_name,
                            **kwargs)
            _apply_bucket_properties(bucket.name, cloudformation_json.get("Properties", {}),
                                     account_id, region_name)
            return bucket

        return classmethod(create_bucket)

    def updating(moto):
        update = moto.__func__

        def update_bucket(cls, original_resource, new_resource_name, cloudformation_json,
                          account_id, region_name):
            properties = cloudformation_json.setdefault("Properties", {})
            # moto's own update reads BucketName for tags; CloudFormation allows leaving it out.
            properties.setdefault("BucketName", original_resource.name)
            bucket = update(cls, original_resource, new_resource_name, cloudformation_json,
                            account_id, region_name)
            _apply_bucket_properties(bucket.name, properties, account_id, region_name)
            return bucket

        return classmethod(update_bucket)

    seams.wrap(FakeBucket, "create_from_cloudformation_json", creating,
               signature="(cls, resource_name: 'str', cloudformation_json: 'Any', account_id: "
                         "'str', region_name: 'str', **kwargs: 'Any') -> 'FakeBucket'",
               owner=__name__)
    seams.wrap(FakeBucket, "update_from_cloudformation_json", updating,
               signature="(cls, original_resource: 'Any', new_resource_name: 'str', "
                         "cloudformation_json: 'Any', account_id: 'str', region_name: 'str') -> "
                         "'FakeBucket'", owner=__name__)


# -- KMS keys ---------------------------------------------------------------------------------


def _policy_text(policy: Any) -> str:
    if isinstance(policy, str):
        return policy
    if isinstance(policy.get("Statement"), list):  # AWS::NoValue in a list drops the entry
        policy = {**policy, "Statement": [s for s in policy["Statement"] if s is not None]}
    return json.dumps(policy)


def _patch_kms_key() -> None:
    from moto.kms.models import Key, kms_backends

    def creating(moto):
        create = moto.__func__

        def create_key(cls, resource_name, cloudformation_json, account_id, region_name,
                       **kwargs):
            properties = cloudformation_json["Properties"]
            if "KeyPolicy" in properties:
                properties["KeyPolicy"] = _policy_text(properties["KeyPolicy"])
            properties["Tags"] = [{"TagKey": t["Key"], "TagValue": t["Value"]}
                                  for t in properties.get("Tags", [])]
            return create(cls, resource_name, cloudformation_json, account_id, region_name,
                          **kwargs)

        return classmethod(create_key)

    def update_key(cls, original_resource, new_resource_name, cloudformation_json, account_id,
                   region_name):
        backend = kms_backends[account_id][region_name]
        properties = cloudformation_json["Properties"]
        key_id = original_resource.id
        if "KeyPolicy" in properties:
            backend.put_key_policy(key_id, _policy_text(properties["KeyPolicy"]))
        if "Description" in properties:
            backend.update_key_description(key_id, properties["Description"])
        original_resource.key_rotation_status = _bool(properties.get("EnableKeyRotation", False))
        original_resource.enabled = _bool(properties.get("Enabled", True))
        return original_resource

    seams.wrap(Key, "create_from_cloudformation_json", creating,
               signature="(cls, resource_name: str, cloudformation_json: Any, account_id: str, "
                         "region_name: str, **kwargs: Any) -> 'Key'", owner=__name__)
    seams.replace(Key, "update_from_cloudformation_json", classmethod(update_key),
                  signature="(cls, original_resource: Any, new_resource_name: str, "
                            "cloudformation_json: dict[str, typing.Any], account_id: str, "
                            "region_name: str) -> Any", owner=__name__)


# -- DynamoDB tables --------------------------------------------------------------------------


def _patch_table() -> None:
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.table import Table

    def creating(moto):
        create = moto.__func__

        def create_table(cls, resource_name, cloudformation_json, account_id, region_name,
                         **kwargs):
            table = create(cls, resource_name, cloudformation_json, account_id, region_name,
                           **kwargs)
            ttl = cloudformation_json["Properties"].get("TimeToLiveSpecification")
            if ttl:
                spec = {"AttributeName": ttl["AttributeName"], "Enabled": _bool(ttl["Enabled"])}
                dynamodb_backends[account_id][region_name].update_time_to_live(table.name, spec)
            return table

        return classmethod(create_table)

    seams.wrap(Table, "create_from_cloudformation_json", creating,
               signature="(cls, resource_name: str, cloudformation_json: dict[str, typing.Any], "
                         "account_id: str, region_name: str, **kwargs: Any) -> 'Table'",
               owner=__name__)


# -- resources moto's CloudFormation skips ----------------------------------------------------


def _patch_load_balancer() -> None:
    from moto.elbv2.models import FakeLoadBalancer, elbv2_backends

    def creating(moto):
        create = moto.__func__

        def create_load_balancer(cls, resource_name, cloudformation_json, account_id,
                                 region_name, **kwargs):
            balancer = create(cls, resource_name, cloudformation_json, account_id, region_name,
                              **kwargs)
            attributes = cloudformation_json["Properties"].get("LoadBalancerAttributes") or []
            if attributes:
                elbv2_backends[account_id][region_name].modify_load_balancer_attributes(
                    balancer.arn, {a["Key"]: str(a["Value"]) for a in attributes})
            return balancer

        return classmethod(create_load_balancer)

    seams.wrap(FakeLoadBalancer, "create_from_cloudformation_json", creating,
               signature="(cls, resource_name: str, cloudformation_json: Any, account_id: str, "
                         "region_name: str, **kwargs: Any) -> 'FakeLoadBalancer'",
               owner=__name__)


def _patch_role_policies() -> None:
    from moto.iam.models import Role

    def as_text(moto):
        def put_policy(self, policy_name, policy_json):
            moto(self, policy_name, _policy_text(policy_json))

        return put_policy

    seams.wrap(Role, "put_policy", as_text,
               signature="(self, policy_name: 'str', policy_json: 'str') -> 'None'",
               owner=__name__)
    seams.wrap(Role, "update_from_cloudformation_json", _updating_role,
               signature="(cls, original_resource: 'Role', new_resource_name: 'str', "
                         "cloudformation_json: 'dict[str, Any]', account_id: 'str', "
                         "region_name: 'str') -> 'Role'", owner=__name__)


def _updating_role(moto):
    update = moto.__func__

    def update_role(cls, original_resource, new_resource_name, cloudformation_json, account_id,
                    region_name):
        role = update(cls, original_resource, new_resource_name, cloudformation_json,
                      account_id, region_name)
        properties = cloudformation_json["Properties"]
        wanted = {p["PolicyName"]: p["PolicyDocument"] for p in properties.get("Policies") or []}
        # Policies of AWS::IAM::Policy resources live on the role too: those stay.
        separate = {policy.policy_name for policy in _iam(account_id, region_name)
                    .inline_policies.values() if role.name in (policy.role_names or [])}
        for name in set(role.policies) - set(wanted) - separate:
            role.delete_policy(name)
        for name, document in wanted.items():
            role.put_policy(name, document)
        if "AssumeRolePolicyDocument" in properties:
            role.assume_role_policy_document = _policy_text(
                properties["AssumeRolePolicyDocument"])
        return role

    return classmethod(update_role)


def _iam(account_id: str, region_name: str):
    from moto.iam.models import iam_backends
    from moto.utilities.utils import get_partition

    return iam_backends[account_id][get_partition(region_name)]


def _add_models() -> None:
    from moto.cloudformation import parsing
    from moto.core.common_models import CloudFormationModel

    class BucketPolicy(CloudFormationModel):
        """AWS::S3::BucketPolicy: the policy of an existing bucket."""

        def __init__(self, bucket: str):
            self.bucket = bucket

        @property
        def physical_resource_id(self) -> str:
            return self.bucket

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::S3::BucketPolicy"

        @staticmethod
        def cloudformation_name_type() -> str:
            return ""

        @classmethod
        def has_cfn_attr(cls, attr: str) -> bool:
            return False

        @classmethod
        def create_from_cloudformation_json(cls, resource_name, cloudformation_json,
                                            account_id, region_name, **kwargs):
            properties = cloudformation_json["Properties"]
            _s3(account_id, region_name).put_bucket_policy(
                properties["Bucket"], json.dumps(properties["PolicyDocument"]).encode())
            return cls(properties["Bucket"])

        @classmethod
        def update_from_cloudformation_json(cls, original_resource, new_resource_name,
                                            cloudformation_json, account_id, region_name):
            if cloudformation_json["Properties"]["Bucket"] != original_resource.bucket:
                original_resource.delete(account_id, region_name)
            return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json,
                                                       account_id, region_name)

        def delete(self, account_id: str, region_name: str) -> None:
            _s3(account_id, region_name).delete_bucket_policy(self.bucket)

    persistence.by_name(BucketPolicy, __name__)  # stacks hold its instances
    # The model map is built from CloudFormationModel's subclasses once and cached.
    parsing.get_model_list.cache_clear()
    parsing.get_model_map.cache_clear()
    parsing.get_name_type_map.cache_clear()


def _s3(account_id: str, region_name: str):
    from moto.s3.models import s3_backends
    from moto.utilities.utils import get_partition

    return s3_backends[account_id][get_partition(region_name)]


# -- change sets ------------------------------------------------------------------------------


def _patch_change_sets() -> None:
    from moto.cloudformation import parsing
    from moto.cloudformation.models import ChangeSet, CloudFormationBackend
    from moto.cloudformation.responses import CloudFormationResponse

    # CreateChangeSet with nothing to change: AWS creates a FAILED change set; moto's response
    # layer answers "No updates are to be performed." before the backend can do so.
    def marking(create):
        def create_change_set(self):
            self._kiln_creating_change_set = True
            try:
                return create(self)
            finally:
                self._kiln_creating_change_set = False

        return create_change_set

    def unless_creating(validate):
        def validate_different_update(self, *args):
            if getattr(self, "_kiln_creating_change_set", False):
                return None
            return validate(self, *args)

        return validate_different_update

    seams.wrap(CloudFormationResponse, "create_change_set", marking,
               signature="(self) -> moto.core.responses.ActionResult", owner=__name__)
    seams.wrap(CloudFormationResponse, "_validate_different_update", unless_creating,
               signature="(self, incoming_params: list[dict[str, typing.Any]] | None, "
                         "stack_body: str, old_stack: moto.cloudformation.models.Stack) -> None",
               owner=__name__)

    # Resources that use a changed parameter through Fn::Sub are changed too.
    seams.replace(parsing, "get_references_from_template", _references,
                  signature="(template: dict[str, typing.Any]) -> list[str]", owner=__name__)

    def skipping_false(update_resource):
        def parse_and_update_resource(logical_id, resource_json, resources_map, *args,
                                      **kwargs):
            # Indexing creates a resource whose Condition is now true; None: its Condition is
            # false.
            if resources_map[logical_id] is None:
                return None
            return update_resource(logical_id, resource_json, resources_map, *args, **kwargs)

        return parse_and_update_resource

    seams.wrap(parsing, "parse_and_update_resource", skipping_false,
               signature="(logical_id: str, resource_json: dict[str, typing.Any], "
                         "resources_map: 'ResourceMap', account_id: str, region_name: str) -> "
                         "Optional[~CF_MODEL]", owner=__name__)
    seams.replace(ChangeSet, "diff", _diff, signature="(self) -> 'list[Change]'",
                  owner=__name__)

    def finishing(execute):
        def execute_change_set(self, change_set_name, stack_name=None):
            change_set = self.describe_change_set(change_set_name)
            execute(self, change_set_name, stack_name)
            _finish_stack(self, self.stacks[change_set.stack_id], change_set)
            # As on AWS, executing a change set removes every change set of the stack.
            for change_set_id, other in list(self.change_sets.items()):
                if other.stack_id == change_set.stack_id:
                    del self.change_sets[change_set_id]

        return execute_change_set

    seams.wrap(CloudFormationBackend, "execute_change_set", finishing,
               signature="(self, change_set_name: 'str', stack_name: 'str | None' = None) -> "
                         "'None'", owner=__name__)


def _diff(self):
    from moto.cloudformation.models import Change

    resource_map = self.stack.resource_map
    # As on AWS, a resource whose Condition is false is not there: never listed as added, and
    # listed as removed when its Condition turns false (moto listed them all).
    old = _present(self.stack, resource_map._template, resource_map.input_parameters)
    old = {name: _normal(body) for name, body in old.items()}
    new = _present(self.stack, self.template_dict, self.parameters or {})
    changes = [Change("Add", name, new[name]["Type"]) for name in new if name not in old]
    changed = {p for p, v in (self.parameters or {}).items()
               if resource_map.input_parameters.get(p) != v}
    for name in new:
        if name in old and (_normal(new[name]) != old[name]
                            or changed & set(_references(new[name]))):
            changes.append(Change("Modify", name, new[name]["Type"]))
    changes += [Change("Remove", name, old[name]["Type"]) for name in old if name not in new]
    return changes


def _present(stack, template: dict, parameters: dict) -> dict:
    """The template's resources whose Condition, if any, is true with these parameters."""
    return _present_in(stack.stack_id, stack.name, stack.region_name, stack.account_id,
                       template, parameters)


def _present_in(stack_id: str, stack_name: str, region: str, account: str, template: dict,
                parameters: dict) -> dict:
    from moto.cloudformation.parsing import ResourceMap

    template = template or {}
    resources = template.get("Resources", {})
    if not template.get("Conditions"):
        return dict(resources)
    found = ResourceMap(stack_id, stack_name, dict(parameters), {}, region, account, template,
                        None)
    found.load_mapping()
    found.load_parameters()
    found.load_conditions()
    return {name: body for name, body in resources.items()
            if "Condition" not in body or found.lazy_condition_map[body["Condition"]]}


def _finish_stack(backend, stack, change_set) -> None:
    """What CreateStack/UpdateStack do and ExecuteChangeSet in moto leaves out."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.core import TaggedEC2Resource

    stack._parse_template()
    stack.description = stack.template_dict.get("Description")
    stack.parameters = dict(change_set.parameters or {})
    if change_set.tags:
        stack.tags = dict(change_set.tags)
    stack.output_map = stack._create_output_map()
    for export in stack.exports:
        backend.exports[export.name] = export
    resource_map = stack.resource_map
    for logical_id, resource in list(resource_map._parsed_resources.items()):
        if isinstance(resource, TaggedEC2Resource):
            tags = {**stack.tags, "aws:cloudformation:stack-name": stack.name,
                    "aws:cloudformation:stack-id": stack.stack_id,
                    "aws:cloudformation:logical-id": logical_id}
            ec2_backends[stack.account_id][stack.region_name].create_tags(
                [resource.physical_resource_id], tags)


def _normal(resource: dict) -> dict:
    """moto adds an empty Properties to resources it has parsed; compare without it."""
    if resource.get("Properties") == {}:
        return {k: v for k, v in resource.items() if k != "Properties"}
    return resource


def _patch_update_order() -> None:
    from moto.cloudformation import parsing

    def update(self, template: dict, parameters: dict | None = None) -> None:
        actions = _actions(self, template, parameters)
        old_json = dict(self._resource_json_map)
        self._template = template
        if parameters:
            self.input_parameters = parameters
        self.load_mapping()
        self.load_parameters()
        self.load_conditions()
        self._resource_json_map = template["Resources"]
        adding = set(actions["Add"])
        for name in _dependency_order(template["Resources"], actions["Add"] + actions["Modify"]):
            if name in adding:
                _ = self[name]  # indexing creates it, as moto's own update does
            else:
                self._parsed_resources[name] = parsing.parse_and_update_resource(
                    name, self._resource_json_map[name], self,
                    account_id=self._account_id, region_name=self._region_name)
        # The cleanup phase: dependents go before what they depend on.
        for name in reversed(_dependency_order(old_json, actions["Remove"])):
            if name in self._parsed_resources:
                self._delete_resource(self._parsed_resources.pop(name), old_json[name])

    seams.replace(parsing.ResourceMap, "update", update,
                  signature="(self, template: dict[str, typing.Any], parameters: dict[str, "
                            "typing.Any] | None = None) -> None", owner=__name__)


def _actions(resource_map, template: dict, parameters: dict | None) -> dict[str, list[str]]:
    """moto's diff of an update, with resources as CloudFormation counts them: one whose
    Condition turns true is added (moto only modified it, or left it uncreated when it used no
    changed parameter), one whose Condition turns false is removed."""
    actions = resource_map.build_resource_diff(template, parameters)
    where = (resource_map.stack_id, resource_map["AWS::StackName"], resource_map._region_name,
             resource_map._account_id)
    before = _present_in(*where, resource_map._template, resource_map.input_parameters)
    after = _present_in(*where, template, parameters or resource_map.input_parameters)
    return {"Add": [name for name in after if name not in before],
            "Modify": [name for name in actions["Modify"] if name in before and name in after],
            "Remove": [name for name in before if name not in after]}


def _patch_stack_resources() -> None:
    """A resource whose Condition is false is not there: DescribeStackResources and
    ListStackResources leave it out (moto listed it as an entry without a logical id)."""
    from moto.cloudformation.models import Stack

    seams.wrap(Stack, "stack_resources",
               lambda moto: property(lambda self: [r for r in moto.fget(self) if r is not None]),
               signature="(self) -> 'Iterable[type[CloudFormationModel]]'", owner=__name__)


def _dependency_order(resources: dict, names: list[str]) -> list[str]:
    """`names` with each after the resources among them that it depends on."""
    pending = list(names)
    ordered: list[str] = []
    while pending:
        waiting = set(pending)
        ready = [n for n in pending if not (_depends_on(resources[n]) & (waiting - {n}))]
        ready = ready or pending[:1]  # a cycle: CloudFormation refuses it before this point
        ordered += ready
        pending = [n for n in pending if n not in ready]
    return ordered


def _depends_on(resource: dict) -> set[str]:
    depends = resource.get("DependsOn") or []
    names = {depends} if isinstance(depends, str) else set(depends)
    return names | set(_references(resource))


def _references(template: Any) -> list[str]:
    """Names a template fragment uses through Ref, Fn::GetAtt or inside Fn::Sub strings."""
    found: list[str] = []
    if isinstance(template, dict):
        for key, value in template.items():
            if key == "Ref" and isinstance(value, str):
                found.append(value)
            elif key == "Fn::GetAtt":
                found.append(value[0] if isinstance(value, list) else str(value).split(".")[0])
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                if isinstance(text, str):
                    found += [name.split(".")[0] for name in re.findall(r"\$\{([^!}][^}]*)\}",
                                                                        text)]
                found += _references(value[1] if isinstance(value, list) else None)
            else:
                found += _references(value)
    elif isinstance(template, list):
        for item in template:
            found += _references(item)
    return found


def _bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() == "true"


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
