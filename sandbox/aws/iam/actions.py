"""Which API operation a request is, and which IAM actions AWS authorizes it as.

Written from AWS's Service Authorization Reference ("Actions, resources, and condition keys for
<service>"), not from moto's internal names. For the services below the action is the operation's
own name under the service's IAM prefix, except where EXCEPTIONS says otherwise; S3 differs for
most operations (HeadObject is s3:GetObject, ListObjectsV2 is s3:ListBucket, DeleteObjects is
s3:DeleteObject on each key…), so every S3 operation is spelled out.

An operation not in the table has no known action: the sandbox refuses it (strict) and says so
in iam.log, rather than guess. tests/test_sandbox_actions.py checks that every operation Kiln and
its tests call is here, with the action AWS documents.

The operation itself is read from the request as AWS's protocols carry it: the `Action`
parameter (query and EC2 protocols), the `X-Amz-Target` header (JSON), the path
`/service/…/operation/NAME` (Smithy RPC v2 CBOR), and for S3's REST API the method, path and
sub-resource (sandbox.aws.iam.actions.s3_operation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

# The credential scope's service name -> the IAM action prefix, where they differ.
PREFIX = {"monitoring": "cloudwatch", "email": "ses"}

# Operations whose action is their own name, by credential-scope service.
SAME_NAME: dict[str, tuple[str, ...]] = {
    "acm": ("AddTagsToCertificate", "DeleteCertificate", "DescribeCertificate",
            "GetCertificate", "ImportCertificate", "ListCertificates", "ListTagsForCertificate",
            "RequestCertificate"),
    "autoscaling": (
        "AttachLoadBalancerTargetGroups", "CompleteLifecycleAction", "CreateAutoScalingGroup",
        "CreateLaunchConfiguration", "CreateOrUpdateTags", "DeleteAutoScalingGroup",
        "DeleteLaunchConfiguration", "DeleteLifecycleHook", "DeletePolicy",
        "DeleteScheduledAction", "DeleteTags", "DescribeAccountLimits",
        "DescribeAutoScalingGroups", "DescribeAutoScalingInstances",
        "DescribeInstanceRefreshes", "DescribeLaunchConfigurations", "DescribeLifecycleHooks",
        "DescribeLoadBalancerTargetGroups", "DescribeLoadBalancers", "DescribePolicies",
        "DescribeScalingActivities", "DescribeScheduledActions", "DescribeTags",
        "DetachLoadBalancerTargetGroups", "EnterStandby", "ExitStandby", "PutLifecycleHook",
        "PutScalingPolicy", "PutScheduledUpdateGroupAction", "RecordLifecycleActionHeartbeat",
        "ResumeProcesses",
        "SetDesiredCapacity", "SetInstanceHealth", "SetInstanceProtection",
        "StartInstanceRefresh", "SuspendProcesses", "TerminateInstanceInAutoScalingGroup",
        "UpdateAutoScalingGroup"),
    "cloudformation": (
        "CancelUpdateStack", "ContinueUpdateRollback", "CreateChangeSet", "CreateStack",
        "DeleteChangeSet", "DeleteStack", "DescribeChangeSet", "DescribeStackEvents",
        "DescribeStackResource", "DescribeStackResources", "DescribeStacks",
        "ExecuteChangeSet", "GetTemplate", "GetTemplateSummary", "ListChangeSets",
        "ListExports", "ListStackResources", "ListStacks", "UpdateStack",
        "UpdateTerminationProtection", "ValidateTemplate"),
    "monitoring": (
        "DeleteAlarms", "DescribeAlarmHistory", "DescribeAlarms", "DescribeAlarmsForMetric",
        "DisableAlarmActions", "EnableAlarmActions", "GetMetricData", "GetMetricStatistics",
        "ListMetrics", "ListTagsForResource", "PutCompositeAlarm", "PutMetricAlarm",
        "PutMetricData", "SetAlarmState", "TagResource", "UntagResource"),
    "codebuild": (
        "BatchGetBuilds", "BatchGetProjects", "CreateProject", "DeleteProject", "ListBuilds",
        "ListBuildsForProject", "ListProjects", "StartBuild", "StopBuild", "UpdateProject"),
    "codepipeline": (
        "CreatePipeline", "DeletePipeline", "DisableStageTransition", "EnableStageTransition",
        "GetPipeline", "GetPipelineExecution", "GetPipelineState", "ListActionExecutions",
        "ListPipelineExecutions", "ListPipelines", "ListTagsForResource", "PutApprovalResult",
        "StartPipelineExecution", "StopPipelineExecution", "TagResource", "UntagResource",
        "UpdatePipeline"),
    "dynamodb": (
        "BatchGetItem", "BatchWriteItem", "CreateTable", "DeleteItem", "DeleteTable",
        "DescribeContinuousBackups", "DescribeTable", "DescribeTimeToLive", "GetItem",
        "ListTables", "ListTagsOfResource", "PutItem", "Query", "Scan", "TagResource",
        "UntagResource", "UpdateContinuousBackups", "UpdateItem", "UpdateTable",
        "UpdateTimeToLive"),
    "ec2": (
        "AllocateAddress", "AssociateIamInstanceProfile", "AssociateRouteTable",
        "AttachInternetGateway",
        "AuthorizeSecurityGroupEgress", "AuthorizeSecurityGroupIngress", "CopyImage",
        "CreateDefaultVpc", "CreateImage", "CreateInternetGateway", "CreateKeyPair",
        "CreateLaunchTemplate", "CreateLaunchTemplateVersion", "CreateNatGateway", "CreateRoute",
        "CreateRouteTable",
        "CreateSecurityGroup", "CreateSnapshot", "CreateSubnet", "CreateTags", "CreateVolume",
        "CreateVpc", "CreateVpcEndpoint", "DeleteInternetGateway", "DeleteKeyPair",
        "DeleteLaunchTemplate", "DeleteLaunchTemplateVersions", "DeleteNatGateway",
        "DeleteRoute", "DeleteRouteTable", "DeleteSecurityGroup", "DeleteSnapshot",
        "DeleteSubnet", "DeleteTags", "DeleteVolume", "DeleteVpc", "DeleteVpcEndpoints",
        "DeregisterImage", "DescribeAccountAttributes", "DescribeAddresses",
        "DescribeAvailabilityZones", "DescribeImageAttribute", "DescribeImages",
        "DescribeInstanceAttribute", "DescribeInstanceStatus", "DescribeInstanceTypes",
        "DescribeInstances", "DescribeInternetGateways", "DescribeKeyPairs",
        "DescribeLaunchTemplateVersions", "DescribeLaunchTemplates", "DescribeNatGateways",
        "DescribeNetworkInterfaces", "DescribeRegions", "DescribeRouteTables",
        "DescribeSecurityGroupRules", "DescribeSecurityGroups", "DescribeSnapshotAttribute",
        "DescribeSnapshots", "DescribeSubnets", "DescribeTags", "DescribeVolumes",
        "DescribeVpcEndpoints", "DescribeVpcs", "DisableImageDeprecation", "DisassociateRouteTable",
        "EnableEbsEncryptionByDefault", "EnableImageDeprecation", "GetConsoleOutput",
        "GetEbsDefaultKmsKeyId", "GetEbsEncryptionByDefault", "ImportKeyPair",
        "ModifyEbsDefaultKmsKeyId", "ModifyImageAttribute", "ModifyInstanceAttribute",
        "ModifySnapshotAttribute", "ModifySubnetAttribute", "ModifyVpcAttribute",
        "RebootInstances", "RegisterImage", "ResetImageAttribute",
        "RevokeSecurityGroupEgress", "RevokeSecurityGroupIngress", "RunInstances",
        "StartInstances", "StopInstances", "TerminateInstances"),
    "elasticloadbalancing": (
        "AddListenerCertificates", "AddTags", "CreateListener", "CreateLoadBalancer",
        "CreateRule", "CreateTargetGroup", "DeleteListener", "DeleteLoadBalancer",
        "DeleteRule", "DeleteTargetGroup", "DeregisterTargets", "DescribeAccountLimits",
        "DescribeListenerCertificates", "DescribeListeners",
        "DescribeLoadBalancerAttributes", "DescribeLoadBalancers", "DescribeRules",
        "DescribeSSLPolicies", "DescribeTags", "DescribeTargetGroupAttributes",
        "DescribeTargetGroups", "DescribeTargetHealth", "ModifyListener",
        "ModifyLoadBalancerAttributes", "ModifyRule", "ModifyTargetGroup",
        "ModifyTargetGroupAttributes", "RegisterTargets", "RemoveListenerCertificates",
        "RemoveTags", "SetRulePriorities", "SetSecurityGroups", "SetSubnets"),
    "iam": (
        "AddRoleToInstanceProfile", "AddUserToGroup", "AttachGroupPolicy", "AttachRolePolicy",
        "AttachUserPolicy", "CreateAccessKey", "CreateGroup", "CreateInstanceProfile",
        "CreatePolicy", "CreatePolicyVersion", "CreateRole", "CreateServiceLinkedRole",
        "CreateUser", "DeleteAccessKey", "DeleteGroup", "DeleteInstanceProfile",
        "DeletePolicy", "DeletePolicyVersion", "DeleteRole", "DeleteRolePolicy",
        "DeleteServiceLinkedRole", "DeleteUser", "DeleteUserPolicy", "DetachGroupPolicy",
        "DetachRolePolicy", "DetachUserPolicy", "GetAccountAuthorizationDetails",
        "GetInstanceProfile", "GetPolicy", "GetPolicyVersion", "GetRole", "GetRolePolicy",
        "GetUser", "GetUserPolicy", "ListAccessKeys", "ListAccountAliases",
        "ListAttachedRolePolicies", "ListAttachedUserPolicies", "ListGroupsForUser",
        "ListInstanceProfiles", "ListInstanceProfilesForRole", "ListPolicies",
        "ListPolicyVersions", "ListRolePolicies", "ListRoleTags", "ListRoles",
        "ListUserPolicies", "ListUsers", "PassRole", "PutRolePolicy", "PutUserPolicy",
        "RemoveRoleFromInstanceProfile", "SimulateCustomPolicy", "SimulatePrincipalPolicy",
        "TagRole", "UntagRole", "UpdateAssumeRolePolicy", "UpdateRole"),
    "kms": (
        "CancelKeyDeletion", "CreateAlias", "CreateGrant", "CreateKey", "Decrypt",
        "DeleteAlias", "DescribeKey", "DisableKey", "DisableKeyRotation", "EnableKey",
        "EnableKeyRotation", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
        "GetKeyPolicy", "GetKeyRotationStatus", "GetPublicKey", "ListAliases", "ListGrants",
        "ListKeyPolicies", "ListKeys", "ListResourceTags", "PutKeyPolicy", "RetireGrant",
        "RevokeGrant", "ScheduleKeyDeletion", "Sign", "TagResource", "UntagResource",
        "UpdateAlias", "UpdateKeyDescription", "Verify"),
    "logs": (
        "CreateLogGroup", "CreateLogStream", "DeleteLogGroup", "DescribeLogGroups",
        "DescribeLogStreams", "FilterLogEvents", "GetLogEvents", "PutLogEvents",
        "PutRetentionPolicy", "TagResource"),
    "secretsmanager": ("CreateSecret", "DeleteSecret", "DescribeSecret", "GetSecretValue",
                       "ListSecrets", "PutSecretValue", "TagResource", "UpdateSecret"),
    "servicequotas": ("GetServiceQuota", "ListServiceQuotas", "RequestServiceQuotaIncrease"),
    "sns": ("CreateTopic", "DeleteTopic", "GetTopicAttributes", "ListSubscriptionsByTopic",
            "ListTopics", "Publish", "SetTopicAttributes", "Subscribe", "TagResource",
            "Unsubscribe"),
    "ssm": ("AddTagsToResource", "DeleteParameter", "DeleteParameters", "DescribeParameters",
            "GetParameter", "GetParameterHistory", "GetParameters", "GetParametersByPath",
            "LabelParameterVersion", "ListTagsForResource", "PutParameter",
            "RemoveTagsFromResource"),
    "sts": ("AssumeRole", "GetCallerIdentity", "GetSessionToken", "TagSession"),
}

# Operations authorized as other actions than their own name (besides S3's).
EXCEPTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("kms", "ReEncrypt"): ("kms:ReEncryptFrom", "kms:ReEncryptTo"),
    ("dynamodb", "TransactGetItems"): ("dynamodb:GetItem",),
    ("dynamodb", "TransactWriteItems"): ("dynamodb:PutItem", "dynamodb:UpdateItem",
                                         "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"),
}


@dataclass(frozen=True)
class S3Action:
    """An S3 operation's action; `versioned` is the action when the request names a versionId,
    and `on` says whether the resource is the bucket or the object."""

    action: str
    on: str = "object"  # or "bucket", or "none" (ListBuckets)
    versioned: str | None = None


def _bucket(action: str) -> S3Action:
    return S3Action(action, "bucket")


S3: dict[str, S3Action] = {
    "AbortMultipartUpload": S3Action("s3:AbortMultipartUpload"),
    "CompleteMultipartUpload": S3Action("s3:PutObject"),
    "CopyObject": S3Action("s3:PutObject"),  # and s3:GetObject on the source (copy_source)
    "CreateBucket": _bucket("s3:CreateBucket"),
    "CreateMultipartUpload": S3Action("s3:PutObject"),
    "DeleteBucket": _bucket("s3:DeleteBucket"),
    "DeleteBucketEncryption": _bucket("s3:PutEncryptionConfiguration"),
    "DeleteBucketLifecycle": _bucket("s3:PutLifecycleConfiguration"),
    "DeleteBucketPolicy": _bucket("s3:DeleteBucketPolicy"),
    "DeleteBucketTagging": _bucket("s3:PutBucketTagging"),
    "DeleteObject": S3Action("s3:DeleteObject", versioned="s3:DeleteObjectVersion"),
    "DeleteObjectTagging": S3Action("s3:DeleteObjectTagging",
                                    versioned="s3:DeleteObjectVersionTagging"),
    # Authorized as s3:DeleteObject (or DeleteObjectVersion) on each key it names.
    "DeleteObjects": _bucket("s3:DeleteObject"),
    "DeletePublicAccessBlock": _bucket("s3:PutBucketPublicAccessBlock"),
    "GetBucketAcl": _bucket("s3:GetBucketAcl"),
    "GetBucketCors": _bucket("s3:GetBucketCORS"),
    "GetBucketEncryption": _bucket("s3:GetEncryptionConfiguration"),
    "GetBucketLifecycleConfiguration": _bucket("s3:GetLifecycleConfiguration"),
    "GetBucketLocation": _bucket("s3:GetBucketLocation"),
    "GetBucketLogging": _bucket("s3:GetBucketLogging"),
    "GetBucketNotificationConfiguration": _bucket("s3:GetBucketNotification"),
    "GetBucketOwnershipControls": _bucket("s3:GetBucketOwnershipControls"),
    "GetBucketPolicy": _bucket("s3:GetBucketPolicy"),
    "GetBucketPolicyStatus": _bucket("s3:GetBucketPolicyStatus"),
    "GetBucketTagging": _bucket("s3:GetBucketTagging"),
    "GetBucketVersioning": _bucket("s3:GetBucketVersioning"),
    "GetBucketWebsite": _bucket("s3:GetBucketWebsite"),
    "GetObject": S3Action("s3:GetObject", versioned="s3:GetObjectVersion"),
    "GetObjectAcl": S3Action("s3:GetObjectAcl", versioned="s3:GetObjectVersionAcl"),
    "GetObjectAttributes": S3Action("s3:GetObjectAttributes",
                                    versioned="s3:GetObjectVersionAttributes"),
    "GetObjectLockConfiguration": _bucket("s3:GetBucketObjectLockConfiguration"),
    "GetObjectTagging": S3Action("s3:GetObjectTagging", versioned="s3:GetObjectVersionTagging"),
    "GetPublicAccessBlock": _bucket("s3:GetBucketPublicAccessBlock"),
    "HeadBucket": _bucket("s3:ListBucket"),
    "HeadObject": S3Action("s3:GetObject", versioned="s3:GetObjectVersion"),
    "ListBuckets": S3Action("s3:ListAllMyBuckets", "none"),
    "ListMultipartUploads": _bucket("s3:ListBucketMultipartUploads"),
    "ListObjectVersions": _bucket("s3:ListBucketVersions"),
    "ListObjects": _bucket("s3:ListBucket"),
    "ListObjectsV2": _bucket("s3:ListBucket"),
    "ListParts": S3Action("s3:ListMultipartUploadParts"),
    "PutBucketAcl": _bucket("s3:PutBucketAcl"),
    "PutBucketCors": _bucket("s3:PutBucketCORS"),
    "PutBucketEncryption": _bucket("s3:PutEncryptionConfiguration"),
    "PutBucketLifecycleConfiguration": _bucket("s3:PutLifecycleConfiguration"),
    "PutBucketLogging": _bucket("s3:PutBucketLogging"),
    "PutBucketNotificationConfiguration": _bucket("s3:PutBucketNotification"),
    "PutBucketOwnershipControls": _bucket("s3:PutBucketOwnershipControls"),
    "PutBucketPolicy": _bucket("s3:PutBucketPolicy"),
    "PutBucketTagging": _bucket("s3:PutBucketTagging"),
    "PutBucketVersioning": _bucket("s3:PutBucketVersioning"),
    "PutBucketWebsite": _bucket("s3:PutBucketWebsite"),
    "PutObject": S3Action("s3:PutObject"),
    "PutObjectAcl": S3Action("s3:PutObjectAcl", versioned="s3:PutObjectVersionAcl"),
    "PutObjectLockConfiguration": _bucket("s3:PutBucketObjectLockConfiguration"),
    "PutObjectTagging": S3Action("s3:PutObjectTagging", versioned="s3:PutObjectVersionTagging"),
    "PutPublicAccessBlock": _bucket("s3:PutBucketPublicAccessBlock"),
    "RestoreObject": S3Action("s3:RestoreObject"),
    "UploadPart": S3Action("s3:PutObject"),
    "UploadPartCopy": S3Action("s3:PutObject"),  # and s3:GetObject on the source
}

# A bucket's sub-resources, by method: the query key that names the operation.
_BUCKET_SUBRESOURCES = {
    "GET": {"acl": "GetBucketAcl", "cors": "GetBucketCors", "encryption": "GetBucketEncryption",
            "lifecycle": "GetBucketLifecycleConfiguration", "location": "GetBucketLocation",
            "logging": "GetBucketLogging", "notification": "GetBucketNotificationConfiguration",
            "ownershipControls": "GetBucketOwnershipControls", "policy": "GetBucketPolicy",
            "policyStatus": "GetBucketPolicyStatus", "tagging": "GetBucketTagging",
            "versioning": "GetBucketVersioning", "website": "GetBucketWebsite",
            "object-lock": "GetObjectLockConfiguration",
            "publicAccessBlock": "GetPublicAccessBlock", "uploads": "ListMultipartUploads",
            "versions": "ListObjectVersions"},
    "PUT": {"acl": "PutBucketAcl", "cors": "PutBucketCors", "encryption": "PutBucketEncryption",
            "lifecycle": "PutBucketLifecycleConfiguration", "logging": "PutBucketLogging",
            "notification": "PutBucketNotificationConfiguration",
            "ownershipControls": "PutBucketOwnershipControls", "policy": "PutBucketPolicy",
            "tagging": "PutBucketTagging", "versioning": "PutBucketVersioning",
            "website": "PutBucketWebsite", "object-lock": "PutObjectLockConfiguration",
            "publicAccessBlock": "PutPublicAccessBlock"},
    "DELETE": {"encryption": "DeleteBucketEncryption", "lifecycle": "DeleteBucketLifecycle",
               "policy": "DeleteBucketPolicy", "tagging": "DeleteBucketTagging",
               "publicAccessBlock": "DeletePublicAccessBlock"},
    "POST": {"delete": "DeleteObjects"},
}
_BUCKET_DEFAULT = {"GET": "ListObjects", "HEAD": "HeadBucket", "PUT": "CreateBucket",
                   "DELETE": "DeleteBucket"}


@dataclass(frozen=True)
class S3Target:
    operation: str | None
    bucket: str | None
    key: str | None
    version_id: str | None


def s3_operation(method: str, path: str, query: str, headers) -> S3Target:
    """The S3 operation of a path-style request (`/bucket/key?sub-resource`)."""
    bucket, _, key = path.lstrip("/").partition("/")
    bucket = unquote(bucket) or None
    key = unquote(key) if key else None
    params = dict(parse_qsl(query, keep_blank_values=True))
    version = params.get("versionId")
    method = method.upper()
    if bucket is None:
        return S3Target("ListBuckets" if method == "GET" else None, None, None, None)
    if key is None:
        operation = _bucket_operation(method, params)
    else:
        operation = _object_operation(method, params, headers)
    return S3Target(operation, bucket, key, version)


def _bucket_operation(method: str, params: dict) -> str | None:
    for name, operation in _BUCKET_SUBRESOURCES.get(method, {}).items():
        if name in params:
            return operation
    if method == "GET" and params.get("list-type") == "2":
        return "ListObjectsV2"
    return _BUCKET_DEFAULT.get(method)


def _object_operation(method: str, params: dict, headers) -> str | None:
    copying = bool(_header(headers, "x-amz-copy-source"))
    if method == "GET":
        for name, operation in (("uploadId", "ListParts"), ("acl", "GetObjectAcl"),
                                ("tagging", "GetObjectTagging"),
                                ("attributes", "GetObjectAttributes")):
            if name in params:
                return operation
        return "GetObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "PUT":
        if "partNumber" in params and "uploadId" in params:
            return "UploadPartCopy" if copying else "UploadPart"
        for name, operation in (("acl", "PutObjectAcl"), ("tagging", "PutObjectTagging")):
            if name in params:
                return operation
        return "CopyObject" if copying else "PutObject"
    if method == "POST":
        if "uploads" in params:
            return "CreateMultipartUpload"
        if "uploadId" in params:
            return "CompleteMultipartUpload"
        if "restore" in params:
            return "RestoreObject"
        return None
    if method == "DELETE":
        if "uploadId" in params:
            return "AbortMultipartUpload"
        return "DeleteObjectTagging" if "tagging" in params else "DeleteObject"
    return None


def _header(headers, name: str) -> str | None:
    if hasattr(headers, "get"):
        return headers.get(name) or headers.get(name.title())
    return None


def operation(service: str, path: str, query: str, form: dict, headers) -> str | None:
    """The operation of a request to a non-S3 service, from the protocol's own place for it."""
    target = _header(headers, "X-Amz-Target")
    if target:
        return target.rpartition(".")[2] or None
    match = re.search(r"/service/[^/]+/operation/([A-Za-z0-9]+)$", path)
    if match:
        return match.group(1)
    found = dict(parse_qsl(query, keep_blank_values=True)).get("Action") or form.get("Action")
    return found or None


def prefix(service: str) -> str:
    return PREFIX.get(service, service)


def iam_actions(service: str, name: str | None) -> tuple[str, ...]:
    """The IAM actions AWS authorizes a (non-S3) operation as; () when the table has none."""
    if not name:
        return ()
    if (service, name) in EXCEPTIONS:
        return EXCEPTIONS[(service, name)]
    if name in SAME_NAME.get(service, ()):
        return (f"{prefix(service)}:{name}",)
    return ()


def s3_action(target: S3Target) -> str | None:
    entry = S3.get(target.operation or "")
    if entry is None:
        return None
    return entry.versioned if target.version_id and entry.versioned else entry.action


def s3_resource(target: S3Target, partition: str = "aws") -> str:
    entry = S3.get(target.operation or "")
    if entry is None or entry.on == "none" or target.bucket is None:
        return "*"
    if entry.on == "bucket" or target.key is None:
        return f"arn:{partition}:s3:::{target.bucket}"
    return f"arn:{partition}:s3:::{target.bucket}/{target.key}"
