"""The ARN a request acts on, for the services whose policies Kiln scopes by resource.

moto names the resource for STS (the role), IAM roles and S3; EC2, Auto Scaling, ELB and
CloudWatch resources, with their tags, come from sandbox/aws/iam/resources.py; for the rest this
module builds the ARN from the request's parameters as AWS's service authorization reference
defines it. An action it cannot place answers policy.UNKNOWN ("*", what AWS evaluates an action
with no resource against: only a Resource pattern matching "*" grants it).
"""

from __future__ import annotations

from sandbox.aws.iam.policy import UNKNOWN


def resource_for(service: str, action: str, params: dict, account: str, region: str) -> str:
    build = BUILDERS.get(service)
    found = build(action.partition(":")[2], params, account, region) if build else None
    return found or UNKNOWN


def _arn(service: str, region: str, account: str, rest: str) -> str:
    return f"arn:aws:{service}:{region}:{account}:{rest}"


def _dynamodb(action, params, account, region):
    table = params.get("TableName")
    return _arn("dynamodb", region, account, f"table/{table}") if table else None


def _kms(action, params, account, region):
    key = params.get("KeyId") or params.get("TargetKeyId")
    return _key_arn(key, account, region) if key else None


def _ssm(action, params, account, region):
    name = params.get("Name") or (params.get("Names") or [None])[0]
    if params.get("ResourceType") == "Parameter":  # AddTagsToResource, RemoveTagsFromResource
        name = params.get("ResourceId")
    if not name:
        return None
    if name.startswith("/aws/service/"):
        account = ""  # AWS's public parameters belong to no account
    if name.startswith("arn:"):
        return name
    return _arn("ssm", region, account, f"parameter/{name.lstrip('/')}")


def _secretsmanager(action, params, account, region):
    """The secret's ARN, with the six characters AWS adds to its name (what a policy's
    `<name>-??????` matches), looked up when the request names it by name or partial ARN."""
    secret = params.get("SecretId")
    if not secret:
        return None
    from moto.secretsmanager.models import secretsmanager_backends

    found = secretsmanager_backends[account][region].secrets.get(secret)
    if found is not None:
        return found.arn
    return secret if secret.startswith("arn:") else \
        _arn("secretsmanager", region, account, f"secret:{secret}")


def _cloudformation(action, params, account, region):
    stack = params.get("StackName")
    if not stack:
        return None
    if stack.startswith("arn:"):
        return stack
    return _arn("cloudformation", region, account, f"stack/{stack}/*")


def _logs(action, params, account, region):
    group = params.get("logGroupName")
    if not group:
        return None
    stream = params.get("logStreamName")
    rest = f"log-group:{group}:log-stream:{stream}" if stream else f"log-group:{group}:*"
    return _arn("logs", region, account, rest)


# IAM's names of the service-linked roles Kiln meets (moto would spell the second
# AWSServiceRoleForElasticloadbalancing).
LINKED_ROLES = {"autoscaling.amazonaws.com": "AWSServiceRoleForAutoScaling",
                "elasticloadbalancing.amazonaws.com": "AWSServiceRoleForElasticLoadBalancing"}


def linked_role_arn(service: str, account: str) -> str | None:
    name = LINKED_ROLES.get(service)
    if name is None:
        return None
    return f"arn:aws:iam::{account}:role/aws-service-role/{service}/{name}"


def _iam(action, params, account, region):
    if action == "CreateServiceLinkedRole":
        return linked_role_arn(params.get("AWSServiceName", ""), account)
    for key, kind in (("RoleName", "role"), ("UserName", "user"),
                      ("InstanceProfileName", "instance-profile")):
        if params.get(key):
            return f"arn:aws:iam::{account}:{kind}/{params[key]}"
    return params.get("PolicyArn") or params.get("PolicySourceArn")


def _sns(action, params, account, region):
    return params.get("TopicArn")  # Publish, Subscribe, topic attributes: the topic's ARN


def _codepipeline(action, params, account, region):
    """The pipeline; a stage's transitions are the stage's, an approval is the action's."""
    if params.get("resourceArn"):
        return params["resourceArn"]
    pipeline = params.get("pipelineName") or params.get("name") or (
        params.get("pipeline") or {}).get("name")
    if not pipeline:
        return None
    rest = pipeline
    if action in ("DisableStageTransition", "EnableStageTransition", "PutApprovalResult"):
        rest += f"/{params.get('stageName', '*')}"
    if action == "PutApprovalResult":
        rest += f"/{params.get('actionName', '*')}"
    return _arn("codepipeline", region, account, rest)


def _codebuild(action, params, account, region):
    """The project; a build's (BatchGetBuilds, StopBuild) is its project's, as on AWS."""
    name = params.get("projectName") or params.get("name") or params.get("id") or (
        params.get("ids") or params.get("names") or [None])[0]
    if not name:
        return None
    if name.startswith("arn:"):
        name = name.split(":", 5)[5].partition("/")[2]
    return _arn("codebuild", region, account, f"project/{name.partition(':')[0]}")


BUILDERS = {"dynamodb": _dynamodb, "kms": _kms, "ssm": _ssm, "secretsmanager": _secretsmanager,
            "cloudformation": _cloudformation, "logs": _logs, "iam": _iam, "sns": _sns,
            "codepipeline": _codepipeline, "codebuild": _codebuild}


# -- roles passed to a service ------------------------------------------------------------------

_TEMPLATE_KEYS = ("LaunchTemplate.", "MixedInstancesPolicy.LaunchTemplate."
                  "LaunchTemplateSpecification.")


def passed_roles(action: str, params: dict, account: str, region: str) -> list[str]:
    """The ARNs of the roles a request hands to EC2 (iam:PassRole is checked on each, as AWS
    does): RunInstances' instance profile, and an Auto Scaling group's launch template's."""
    if action == "ec2:RunInstances":
        return _profile_roles(account, params.get("IamInstanceProfile.Name"),
                              params.get("IamInstanceProfile.Arn"))
    if action in ("autoscaling:CreateAutoScalingGroup", "autoscaling:UpdateAutoScalingGroup"):
        profile = _template_profile(params, account, region)
        return _profile_roles(account, profile.get("Name"), profile.get("Arn"))
    return []


def _profile_roles(account: str, name: str | None, arn: str | None) -> list[str]:
    from moto.iam.exceptions import NotFoundException
    from moto.iam.models import iam_backends

    if not name and not arn:
        return []
    backend = iam_backends[account]["aws"]
    try:
        profile = backend.get_instance_profile_by_arn(arn) if arn \
            else backend.get_instance_profile(name)
    except NotFoundException:
        return []  # the service itself answers that the profile does not exist
    return [role.arn for role in profile.roles]


def _template_profile(params: dict, account: str, region: str) -> dict:
    from moto.ec2.models import ec2_backends

    for prefix in _TEMPLATE_KEYS:
        template_id = params.get(f"{prefix}LaunchTemplateId")
        template_name = params.get(f"{prefix}LaunchTemplateName")
        if not template_id and not template_name:
            continue
        backend = ec2_backends[account][region]
        try:
            template = backend.get_launch_template(template_id) if template_id \
                else backend.get_launch_template_by_name(template_name)
            version = template.get_version(params.get(f"{prefix}Version") or "$Default")
        except Exception:  # noqa: BLE001 - an unknown template is the service's own error
            return {}
        return version.data.get("IamInstanceProfile") or {}
    return {}


# -- keys used through EC2 on the caller's behalf -----------------------------------------------

# What EC2 does with a customer managed key as the caller when it encrypts a new volume or a copy's
# snapshots: a grant for the volume, and a data key without plaintext.
NEW_VOLUME_KEY = ("kms:CreateGrant", "kms:GenerateDataKeyWithoutPlaintext")
# ... and when it starts a volume from a snapshot encrypted with the key.
SNAPSHOT_KEY = ("kms:CreateGrant", "kms:Decrypt")


def keys_used(action: str, params: dict, account: str, region: str) -> list[tuple[str, tuple]]:
    """(key ARN, KMS actions) that EC2 performs as the caller for this request: RunInstances'
    volume keys and the image's snapshot key; CopyImage's destination key. (A copy's source key
    is checked after its snapshot permission, in the shared_images patch.)"""
    if action == "ec2:RunInstances":
        named = [v for k, v in params.items()
                 if k.startswith("BlockDeviceMapping.") and k.endswith(".Ebs.KmsKeyId")]
        found = [(_key_arn(k, account, region), NEW_VOLUME_KEY) for k in named]
        image_key = _image_key(params.get("ImageId"), account, region)
        if image_key and not named:
            found.append((image_key, SNAPSHOT_KEY))
        return found
    if action == "ec2:CopyImage" and params.get("KmsKeyId"):
        return [(_key_arn(params["KmsKeyId"], account, region), NEW_VOLUME_KEY)]
    return []


# What Secrets Manager does with a secret's customer managed key as the caller: it decrypts the
# value GetSecretValue reads and makes a data key for the one PutSecretValue stores.
SECRET_VALUE_KEY = {"secretsmanager:GetSecretValue": ("kms:Decrypt",),
                    "secretsmanager:PutSecretValue": ("kms:GenerateDataKey",)}


def secret_key_used(action: str, params: dict, account: str,
                    region: str) -> tuple[str, str, tuple] | None:
    """(key ARN, secret ARN, KMS actions) Secrets Manager performs as the caller for this
    request, when it reads or writes the value of a secret encrypted with a key of its own."""
    from moto.secretsmanager.models import secretsmanager_backends

    uses = SECRET_VALUE_KEY.get(action)
    if not uses or not params.get("SecretId"):
        return None
    found = secretsmanager_backends[account][region].secrets.get(params["SecretId"])
    key = getattr(found, "kms_key_id", None)
    if found is None or not key:
        return None
    return _key_arn(key, account, region), found.arn, uses


def _key_arn(key: str, account: str, region: str) -> str:
    """A key id, alias name or ARN as the ARN policies name it."""
    if key.startswith("arn:"):
        return key
    return _arn("kms", region, account, key if key.startswith("alias/") else f"key/{key}")


def _image_key(image_id: str | None, account: str, region: str) -> str | None:
    """The customer managed key of the image's snapshot, as an ARN in the image owner's account."""
    from moto.ec2.models import ec2_backends

    if not image_id:
        return None
    try:
        image = ec2_backends[account][region].describe_images(ami_ids=[image_id])[0]
    except Exception:  # noqa: BLE001 - an unknown image is RunInstances' own error
        return None
    snapshot = getattr(image, "ebs_snapshot", None)
    if snapshot is None or not snapshot.encrypted or not snapshot.kms_key_id:
        return None
    return _key_arn(snapshot.kms_key_id, image.owner_id, region)
