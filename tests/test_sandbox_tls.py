"""sandbox/server.py: the sandbox's endpoint answers TLS as AWS's endpoints do, on the same port
as plain HTTP, and its IAM evaluates a request that came over TLS with aws:SecureTransport true,
a plain one false. Kiln's sandbox target uses TLS, verifying the sandbox's CA; a `target: aws`
run never uses either."""

from __future__ import annotations

import json
import os

import boto3
import pytest
from botocore.exceptions import ClientError, SSLError

from cloud.errors import KilnError
from cloud.target import connect

BUCKET = "tls-only"
# As the pipeline's artifact bucket (orchestrator/codepipeline.py): no request without TLS.
TLS_ONLY = {"Version": "2012-10-17", "Statement": [{
    "Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
    "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
    "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}
# Real account ids (a target aws run refuses the sandbox's placeholders).
REAL_ACCOUNTS = {"build": {"id": "310987654321"}}


def s3(box, endpoint: str, verify):
    keys = box.credentials("admin")
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", verify=verify,
                        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])


def test_a_tls_only_bucket_takes_requests_over_tls_and_refuses_plain_ones(clean_sandbox):
    secure = s3(clean_sandbox, clean_sandbox.secure_endpoint, str(clean_sandbox.ca_bundle))
    plain = s3(clean_sandbox, clean_sandbox.endpoint, None)
    secure.create_bucket(Bucket=BUCKET)
    secure.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(TLS_ONLY))
    secure.put_object(Bucket=BUCKET, Key="over-tls", Body=b"sent over TLS")
    for call in (lambda: plain.put_object(Bucket=BUCKET, Key="plain", Body=b"x"),
                 lambda: plain.get_object(Bucket=BUCKET, Key="over-tls")):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert secure.get_object(Bucket=BUCKET, Key="over-tls")["Body"].read() == b"sent over TLS"
    assert [o["Key"] for o in secure.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["over-tls"]


def test_only_a_client_given_the_sandbox_ca_trusts_the_endpoint(sandbox_box):
    """The sandbox's CA is handed to clients (AWS_CA_BUNDLE, verify=), never added to the
    default trust: a client with the default bundle refuses the endpoint's certificate."""
    with pytest.raises(SSLError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        s3(sandbox_box, sandbox_box.secure_endpoint, True).list_buckets()
    assert "Buckets" in s3(sandbox_box, sandbox_box.secure_endpoint,
                           str(sandbox_box.ca_bundle)).list_buckets()


def test_the_sandbox_target_uses_tls_and_a_real_run_never_uses_its_endpoint_or_ca(
        sandbox_box, kiln_settings, monkeypatch):
    aws = connect(kiln_settings())
    assert aws.client("s3").meta.endpoint_url == sandbox_box.secure_endpoint
    assert os.environ["AWS_CA_BUNDLE"] == str(sandbox_box.ca_bundle)
    # What the sandbox set (as `invoke sandbox.env` prints it), left over: refused, both named.
    real = kiln_settings(target="aws", accounts=REAL_ACCOUNTS)
    with pytest.raises(KilnError, match=r"AWS_ENDPOINT_URL is set \(https://.*unset it \(and "
                                        r"AWS_CA_BUNDLE, .*ca\.crt, set with it\)"):
        connect(real)
    # Pointed at the sandbox's endpoint on purpose, a real run's clients still verify against
    # the default trust, and so refuse it.
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_CA_BUNDLE")
    on_purpose = kiln_settings(target="aws", accounts=REAL_ACCOUNTS,
                               aws={"endpoint_url": sandbox_box.secure_endpoint,
                                    "max_attempts": 1})
    with pytest.raises(KilnError, match="cannot reach AWS STS .*certificate verify failed"):
        connect(on_purpose)
