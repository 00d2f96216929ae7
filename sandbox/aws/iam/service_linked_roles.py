"""Service-linked roles and key-policy principals, as IAM and KMS treat them.

- CloudFormation creates `AWS::IAM::ServiceLinkedRole` (moto skips it): the role
  `AWSServiceRoleFor<Service>` under `/aws-service-role/<service>/`, trusted by the service; a
  second one for the same service fails, as IAM answers "has been taken in this account".
- A service-linked role gets IAM's name for its service (AWSServiceRoleForElasticLoadBalancing;
  moto would spell it AWSServiceRoleForelasticloadbalancing), however it is created.
- CreateKey and PutKeyPolicy refuse a key policy naming an IAM role or user that does not exist
  (MalformedPolicyDocumentException "invalid principals"), as KMS does; so a stack must create a
  role before the key policy that names it.
"""

from __future__ import annotations

import json
from pathlib import Path

from sandbox.aws import persistence, seams


def apply(state_dir: Path) -> None:
    _add_model()
    _name_as_iam_does()
    _check_key_principals()


def _name_as_iam_does() -> None:
    from moto.iam.models import IAMBackend

    from sandbox.aws.iam.arns import LINKED_ROLES

    def naming(create):
        def named(self, service_name: str, description: str, suffix: str):
            name = LINKED_ROLES.get(service_name)
            if not name or suffix:
                return create(self, service_name, description, suffix)
            trust = {"Version": "2012-10-17", "Statement": [{
                "Action": ["sts:AssumeRole"], "Effect": "Allow",
                "Principal": {"Service": [service_name]}}]}
            return self.create_role(name, json.dumps(trust), f"/aws-service-role/{service_name}/",
                                    permissions_boundary=None, description=description, tags=[],
                                    max_session_duration="3600", linked_service=service_name)

        return named

    seams.wrap(IAMBackend, "create_service_linked_role", naming,
               signature="(self, service_name: 'str', description: 'str', suffix: 'str') -> "
                         "'Role'", owner=__name__)


def _add_model() -> None:
    from moto.cloudformation import parsing
    from moto.core.common_models import CloudFormationModel
    from moto.iam.models import iam_backends

    class ServiceLinkedRole(CloudFormationModel):
        def __init__(self, role):
            self.role = role

        @property
        def physical_resource_id(self) -> str:
            return self.role.name

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::IAM::ServiceLinkedRole"

        @staticmethod
        def cloudformation_name_type() -> str:
            return ""

        @classmethod
        def has_cfn_attr(cls, attr: str) -> bool:
            return attr == "Arn"

        def get_cfn_attribute(self, attribute_name: str) -> str:
            return self.role.arn

        @classmethod
        def create_from_cloudformation_json(cls, resource_name, cloudformation_json,
                                            account_id, region_name, **kwargs):
            from moto.iam.exceptions import InvalidInput

            properties = cloudformation_json["Properties"]
            backend = iam_backends[account_id]["aws"]
            service = properties["AWSServiceName"]
            suffix = properties.get("CustomSuffix", "")
            taken = [r for r in backend.get_roles()
                     if r.path == f"/aws-service-role/{service}/" and not suffix]
            if taken:
                raise InvalidInput(
                    f"Service role name {taken[0].name} has been taken in this "
                    "account, please try a different suffix.")
            role = backend.create_service_linked_role(
                service, properties.get("Description", ""), suffix)
            return cls(role)

        @classmethod
        def update_from_cloudformation_json(cls, original_resource, new_resource_name,
                                            cloudformation_json, account_id, region_name):
            return original_resource

        def delete(self, account_id: str, region_name: str) -> None:
            iam_backends[account_id]["aws"].delete_role(self.role.name)

    persistence.by_name(ServiceLinkedRole, __name__)  # stacks hold its instances
    parsing.get_model_list.cache_clear()
    parsing.get_model_map.cache_clear()
    parsing.get_name_type_map.cache_clear()


def missing_principals(policy: str | dict | None) -> list[str]:
    """The IAM role and user ARNs a key policy names that do not exist."""
    from sandbox.aws.iam import identities

    if not policy:
        return []
    document = json.loads(policy) if isinstance(policy, str) else policy
    statements = document.get("Statement", [])
    missing = []
    for statement in statements if isinstance(statements, list) else [statements]:
        principal = statement.get("Principal")
        named = principal.get("AWS", []) if isinstance(principal, dict) else []
        for arn in named if isinstance(named, list) else [named]:
            role_missing = ":role/" in arn and identities.role_by_arn(arn) is None
            if role_missing or (":user/" in arn and not identities.user_exists(arn)):
                missing.append(arn)
    return missing


def _check_key_principals() -> None:
    from moto.core.exceptions import JsonRESTError
    from moto.kms.models import KmsBackend

    def refuse(policy) -> None:
        if missing_principals(policy):
            raise JsonRESTError("MalformedPolicyDocumentException",
                                "Policy contains a statement with one or more invalid principals.")

    def checking_create(create_key):
        def checked_create(self, policy, *args, **kwargs):
            refuse(policy)
            return create_key(self, policy, *args, **kwargs)

        return checked_create

    def checking_put(put_key_policy):
        def checked_put(self, key_id, policy):
            refuse(policy)
            return put_key_policy(self, key_id, policy)

        return checked_put

    seams.wrap(KmsBackend, "create_key", checking_create,
               signature="(self, policy: str | None, key_usage: str, key_spec: str, description: "
                         "str, tags: list[dict[str, str]] | None, multi_region: bool = False, "
                         "origin: str = 'AWS_KMS') -> moto.kms.models.Key", owner=__name__)
    seams.wrap(KmsBackend, "put_key_policy", checking_put,
               signature="(self, key_id: str, policy: str) -> None", owner=__name__)
