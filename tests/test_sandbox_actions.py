"""The sandbox's own table of IAM actions (sandbox/aws/iam/actions.py), checked three ways:
every operation Kiln and its tests call is in it; S3's operations map to the actions AWS's
Service Authorization Reference documents; and the server authorizes (and logs) requests under
those actions."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

import boto3
import botocore.session
import pytest
from botocore import xform_name
from botocore.exceptions import ClientError
from botocore.serialize import create_serializer

from sandbox.aws.iam import actions

ROOT = Path(__file__).resolve().parent.parent
# boto3's service names -> the credential scope's (the table's keys).
SERVICES = {"s3": "s3", "ec2": "ec2", "autoscaling": "autoscaling",
            "elbv2": "elasticloadbalancing", "cloudformation": "cloudformation", "iam": "iam",
            "sts": "sts", "cloudwatch": "monitoring", "kms": "kms", "ssm": "ssm",
            "dynamodb": "dynamodb", "logs": "logs", "secretsmanager": "secretsmanager",
            "acm": "acm", "sns": "sns", "codepipeline": "codepipeline",
            "codebuild": "codebuild"}

# From the Service Authorization Reference for Amazon S3: the action each operation Kiln uses is
# authorized as (written here independently of the table it checks).
S3_DOCUMENTED = {
    "CreateBucket": "s3:CreateBucket", "DeleteBucket": "s3:DeleteBucket",
    "DeleteObject": "s3:DeleteObject", "DeleteObjects": "s3:DeleteObject",
    "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject", "HeadBucket": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket", "ListObjects": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions", "ListBuckets": "s3:ListAllMyBuckets",
    "PutObject": "s3:PutObject", "CopyObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject", "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "GetBucketPolicy": "s3:GetBucketPolicy", "PutBucketPolicy": "s3:PutBucketPolicy",
    "GetBucketVersioning": "s3:GetBucketVersioning",
    "PutBucketVersioning": "s3:PutBucketVersioning",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "GetBucketTagging": "s3:GetBucketTagging", "GetBucketLocation": "s3:GetBucketLocation",
    "GetObjectTagging": "s3:GetObjectTagging", "PutObjectTagging": "s3:PutObjectTagging",
    "GetBucketAcl": "s3:GetBucketAcl", "ListParts": "s3:ListMultipartUploadParts",
}


def _operations_called() -> dict[str, set[tuple[str, str]]]:
    """snake_case name -> the (service, operation) pairs it may be, for every boto3 call,
    paginator and waiter named in Kiln's code, its tests and benches."""
    session = botocore.session.get_session()
    names: dict[str, set[tuple[str, str]]] = {}
    for boto_name, scope in SERVICES.items():
        model = session.get_service_model(boto_name)
        for operation in model.operation_names:
            names.setdefault(xform_name(operation), set()).add((scope, operation))
        try:
            waiters = session.get_waiter_model(boto_name)
        except Exception:  # noqa: BLE001 - a service without waiters
            continue
        for waiter in waiters.waiter_names:
            operation = waiters.get_waiter(waiter).operation
            names.setdefault(f"waiter:{xform_name(waiter)}", set()).add((scope, operation))
    files = [ROOT / "tasks.py"] + [p for folder in ("cloud", "packager", "provisioner",
                                                    "orchestrator", "sandbox", "tests", "bench")
                                   for p in (ROOT / folder).rglob("*.py")]
    called: dict[str, set[tuple[str, str]]] = {}
    for path in files:
        text = path.read_text()
        found = re.findall(r"\.([a-z][a-z0-9_]+)\(", text)
        found += [m[1] if m[0] == "paginator" else f"waiter:{m[1]}" for m in re.findall(
            r"get_(paginator|waiter)\(\s*[\"']([a-z0-9_]+)[\"']", text)]
        for name in found:
            if name in names:
                called[name] = names[name]
    return called


def _known(scope: str, operation: str) -> bool:
    if scope == "s3":
        return operation in actions.S3
    return bool(actions.iam_actions(scope, operation))


def test_every_operation_kiln_and_its_tests_call_has_an_iam_action():
    called = _operations_called()
    assert len(called) > 100  # the scan found the code
    missing = sorted(f"{name}: {sorted(pairs)}" for name, pairs in called.items()
                     if not any(_known(scope, op) for scope, op in pairs))
    assert not missing, "operations without an IAM action in sandbox/aws/iam/actions.py:\n" + \
        "\n".join(missing)


def test_s3_operations_map_to_the_documented_actions():
    for operation, documented in S3_DOCUMENTED.items():
        assert actions.S3[operation].action == documented, operation
    versioned = actions.S3Target("GetObject", "b", "k", "v1")
    assert actions.s3_action(versioned) == "s3:GetObjectVersion"
    assert actions.iam_actions("kms", "ReEncrypt") == ("kms:ReEncryptFrom", "kms:ReEncryptTo")
    assert actions.iam_actions("monitoring", "PutMetricAlarm") == ("cloudwatch:PutMetricAlarm",)
    assert actions.iam_actions("ec2", "NoSuchOperation") == ()


def _required(shape, name: str):
    """A minimal value of a botocore shape, enough to serialize a request."""
    if shape.type_name == "structure":
        return {member: _required(shape.members[member], member)
                for member in shape.required_members}
    if shape.type_name == "list":
        return [_required(shape.member, name)]
    if shape.type_name == "map":
        return {}
    if shape.type_name in ("integer", "long"):
        return 1
    if shape.type_name == "boolean":
        return True
    if shape.type_name == "blob":
        return b""
    if shape.type_name == "timestamp":
        return 0
    return {"Bucket": "bucket", "Key": "dir/key", "CopySource": "src/key"}.get(name, "x")


@pytest.mark.parametrize("operation", sorted(actions.S3))
def test_the_s3_classifier_reads_every_operation_as_botocore_sends_it(operation):
    model = botocore.session.get_session().get_service_model("s3")
    op_model = model.operation_model(operation)
    params = _required(op_model.input_shape, "") if op_model.input_shape else {}
    request = create_serializer("rest-xml").serialize_to_request(params, op_model)
    query = urlencode(request["query_string"], doseq=True) \
        if isinstance(request["query_string"], dict) else request["query_string"]
    path = request["url_path"].partition("?")
    query = "&".join(q for q in (path[2], query) if q)
    target = actions.s3_operation(request["method"], path[0], query, request["headers"])
    assert target.operation == operation
    assert target.bucket == ("bucket" if "Bucket" in params else None)


def _iam_log(box) -> str:
    path = box.state_dir / "iam.log"
    return path.read_text() if path.exists() else ""


def test_the_server_authorizes_s3_calls_under_iams_actions(clean_strict):
    admin = boto3.client("s3", endpoint_url=clean_strict.endpoint, region_name="us-east-1",
                         **_keys(clean_strict, "admin"))
    admin.create_bucket(Bucket="not-the-operators")
    admin.put_object(Bucket="not-the-operators", Key="el9/a.rpm", Body=b"a")
    operator = boto3.client("s3", endpoint_url=clean_strict.endpoint, region_name="us-east-1",
                            **_keys(clean_strict, "operator"))
    before = len(_iam_log(clean_strict))
    for call in (lambda: operator.head_object(Bucket="not-the-operators", Key="el9/a.rpm"),
                 lambda: operator.list_objects_v2(Bucket="not-the-operators", Prefix="el9/"),
                 lambda: operator.delete_objects(Bucket="not-the-operators", Delete={
                     "Objects": [{"Key": "el9/a.rpm"}]})):
        with pytest.raises(ClientError):
            call()
    logged = _iam_log(clean_strict)[before:]
    assert "s3:GetObject arn:aws:s3:::not-the-operators/el9/a.rpm" in logged
    assert "s3:ListBucket arn:aws:s3:::not-the-operators:" in logged
    assert "s3:DeleteObject arn:aws:s3:::not-the-operators/el9/a.rpm" in logged
    assert not re.search(r"s3:(HeadObject|ListObjectsV2|DeleteObjects)\b", logged)


def _keys(box, identity: str) -> dict:
    creds = box.credentials(identity)
    return {"aws_access_key_id": creds["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": creds["AWS_SECRET_ACCESS_KEY"]}
