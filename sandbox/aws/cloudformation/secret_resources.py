"""CloudFormation makes AWS::SecretsManager::Secret (moto skips it with a warning).

As AWS documents it: the secret is created with its Name (else `<stack>-<logical id>-<random>`),
Description, KmsKeyId and Tags, and with a value only when the template gives SecretString; a
secret made without one has no version, so GetSecretValue answers ResourceNotFoundException
until PutSecretValue gives it one. Ref is the secret's ARN (with the six characters Secrets
Manager adds to its name), GetAtt Id too. An update changes the description and the key in place
(the value stays); deleting the stack deletes the secret without a recovery window.
"""

from __future__ import annotations

from pathlib import Path

from sandbox.aws import persistence


def apply(state_dir: Path) -> None:
    from moto.cloudformation import parsing
    from moto.core.common_models import CloudFormationModel

    class Secret(CloudFormationModel):
        def __init__(self, arn: str, account_id: str, region_name: str):
            self.arn, self.account_id, self.region_name = arn, account_id, region_name

        @property
        def physical_resource_id(self) -> str:
            return self.arn

        @staticmethod
        def cloudformation_name_type() -> str:
            return "Name"

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::SecretsManager::Secret"

        @classmethod
        def has_cfn_attr(cls, attr: str) -> bool:
            return attr == "Id"

        def get_cfn_attribute(self, attribute_name: str):
            return self.arn

        @classmethod
        def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                            region_name, **kwargs):
            properties = cloudformation_json.get("Properties") or {}
            made = _secrets(account_id, region_name).create_secret(
                name=properties.get("Name") or resource_name,
                secret_string=properties.get("SecretString"), secret_binary=None,
                description=properties.get("Description"), tags=properties.get("Tags"),
                kms_key_id=properties.get("KmsKeyId"), client_request_token=None,
                replica_regions=[], force_overwrite=False)
            return cls(_arn_of(made), account_id, region_name)

        @classmethod
        def update_from_cloudformation_json(cls, original_resource, new_resource_name,
                                            cloudformation_json, account_id, region_name):
            properties = cloudformation_json.get("Properties") or {}
            _secrets(account_id, region_name).update_secret(
                original_resource.arn, kms_key_id=properties.get("KmsKeyId"),
                description=properties.get("Description"))
            return original_resource

        @classmethod
        def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                            region_name):
            _delete(resource_name, account_id, region_name)

        def delete(self, account_id: str, region_name: str) -> None:
            _delete(self.arn, account_id, region_name)

    Secret.__module__ = __name__
    persistence.by_name(Secret, __name__)  # stacks hold its instances
    parsing.get_model_map.cache_clear()
    parsing.get_name_type_map.cache_clear()


def _secrets(account_id: str, region_name: str):
    from moto.secretsmanager.models import secretsmanager_backends

    return secretsmanager_backends[account_id][region_name]


def _arn_of(made) -> str:
    import json

    return (json.loads(made) if isinstance(made, str) else made)["ARN"]


def _delete(secret_id: str, account_id: str, region_name: str) -> None:
    backend = _secrets(account_id, region_name)
    if secret_id in backend.secrets:
        backend.delete_secret(secret_id, None, True)
