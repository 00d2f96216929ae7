"""The sandbox checks SigV4 from the request as it arrived (sandbox/aws/iam/sigv4.py), not from a
WSGI framework's decoded view of it: query values with encoded `/`, `+`, `%`, spaces, unicode and
repeated names verify, and a signature over anything else than the wire's bytes is refused."""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import quote, urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from sandbox.aws.iam import sigv4

AWKWARD = ["el9/", "a+b", "100%", "two words", "naïve/ключ", "x=y&z", "~tilde", "semi;colon"]
CREDENTIALS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


def _wire(request: AWSRequest) -> sigv4.WireRequest:
    """What the server receives for a request botocore prepared and signed."""
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    body = prepared.body or b""
    headers = [("Host", parts.netloc), *prepared.headers.items()]  # as an HTTP client sends it
    return sigv4.WireRequest.build(prepared.method, target, headers,
                                   body if isinstance(body, bytes) else body.encode())


def _signed(service: str, method: str, url: str, data: bytes = b"") -> AWSRequest:
    request = AWSRequest(method=method, url=url, data=data)
    signer = S3SigV4Auth if service == "s3" else SigV4Auth
    signer(CREDENTIALS, service, "us-east-1").add_auth(request)
    return request


@pytest.mark.parametrize("value", AWKWARD)
@pytest.mark.parametrize("service", ["s3", "ec2"])
def test_botocores_signature_verifies_for_awkward_query_values(service, value):
    url = f"http://127.0.0.1:5000/bucket/?prefix={quote(value, safe='-_.~')}&list-type=2"
    request = _signed(service, "GET", url)
    wire = _wire(request)
    auth = sigv4.parse_authorization(wire.header("Authorization"))
    assert sigv4.matches(wire, auth, CREDENTIALS.secret_key)


def test_repeated_query_names_are_sorted_by_value_and_kept():
    request = _signed("ec2", "GET", "http://127.0.0.1:5000/?b=2&a=z&a=y&a=")
    wire = _wire(request)
    auth = sigv4.parse_authorization(wire.header("Authorization"))
    assert sigv4.canonical_query(wire.query) == "a=&a=y&a=z&b=2"
    assert sigv4.matches(wire, auth, CREDENTIALS.secret_key)


def test_the_query_is_canonicalized_as_aws_does_not_as_it_was_decoded():
    """The defect moto 5.2.1 had: it signed its decoded view `prefix=el9/` as is, where the
    client had signed the wire's `el9%2F`. AWS normalizes every value to one encoding."""
    assert sigv4.canonical_query("prefix=el9/") == "prefix=el9%2F"
    assert sigv4.canonical_query("q=a+b&q=a%2bb&s=x%20y") == "q=a%2Bb&q=a%2Bb&s=x%20y"
    request = _signed("s3", "GET", "http://127.0.0.1:5000/bucket?prefix=el9%2F")
    wire = _wire(request)
    auth = sigv4.parse_authorization(wire.header("Authorization"))
    assert sigv4.matches(wire, auth, CREDENTIALS.secret_key)
    tampered = sigv4.WireRequest(wire.method, "/bucket?prefix=el8%2F", wire.headers, wire.body)
    assert not sigv4.matches(tampered, auth, CREDENTIALS.secret_key)


def test_non_s3_paths_are_encoded_twice_and_s3_paths_once():
    assert sigv4.canonical_uri("/a%20b/./c/../d", "ec2") == "/a%2520b/d"
    assert sigv4.canonical_uri("/bucket/a%20b/./c", "s3") == "/bucket/a%20b/./c"
    request = _signed("lambda", "GET", "http://127.0.0.1:5000/2015-03-31/functions/f%3Ax/")
    wire = _wire(request)
    assert sigv4.matches(wire, sigv4.parse_authorization(wire.header("Authorization")),
                         CREDENTIALS.secret_key)


def test_the_body_is_part_of_the_signature():
    request = _signed("sts", "POST", "http://127.0.0.1:5000/",
                      b"Action=GetCallerIdentity&Version=2011-06-15")
    wire = _wire(request)
    auth = sigv4.parse_authorization(wire.header("Authorization"))
    assert sigv4.matches(wire, auth, CREDENTIALS.secret_key)
    changed = sigv4.WireRequest(wire.method, wire.target, wire.headers,
                                b"Action=GetCallerIdentity&Version=2011-06-16")
    assert not sigv4.matches(changed, auth, CREDENTIALS.secret_key)


@pytest.mark.parametrize("header", ["AWS4-HMAC-SHA256 Credential=AKID/2024/us-east-1/s3",
                                    "AWS AKID:signature", ""])
def test_a_malformed_authorization_header_is_named(header):
    with pytest.raises(sigv4.Malformed):
        sigv4.parse_authorization(header)


# -- against the sandbox's server ---------------------------------------------------------------


def _s3(box):
    creds = box.credentials("admin")
    return boto3.client("s3", endpoint_url=box.endpoint, region_name="us-east-1",
                        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])


def test_the_server_verifies_awkward_keys_prefixes_and_repeated_names(strict_box):
    s3 = _s3(strict_box)
    bucket = "sigv4-awkward"
    s3.create_bucket(Bucket=bucket)
    for value in AWKWARD:
        s3.put_object(Bucket=bucket, Key=f"{value}/object", Body=b"x")
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=value)
        assert [o["Key"] for o in listed["Contents"]][0].startswith(value)
        assert s3.get_object(Bucket=bucket, Key=f"{value}/object")["Body"].read() == b"x"
    # Repeated names on the wire, signed as sent.
    creds = strict_box.credentials("admin")
    keys = Credentials(creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"])
    url = f"{strict_box.endpoint}/{bucket}?list-type=2&prefix=el9%2F&prefix=el9%2F"
    request = AWSRequest(method="GET", url=url)
    S3SigV4Auth(keys, "s3", "us-east-1").add_auth(request)
    prepared = request.prepare()
    with urllib.request.urlopen(urllib.request.Request(
            prepared.url, headers=dict(prepared.headers)), timeout=10) as answer:
        assert answer.status == 200


def test_the_server_refuses_a_signature_it_did_not_get(strict_box):
    creds = strict_box.credentials("admin")
    keys = Credentials(creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"])
    request = AWSRequest(method="GET", url=f"{strict_box.endpoint}/?list-type=2&prefix=a")
    S3SigV4Auth(keys, "s3", "us-east-1").add_auth(request)
    prepared = request.prepare()
    sent = prepared.url.replace("prefix=a", "prefix=b")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(urllib.request.Request(sent, headers=dict(prepared.headers)),
                               timeout=10)
    assert raised.value.code == 403
    assert b"SignatureDoesNotMatch" in raised.value.read()


def test_a_wrong_secret_is_refused_by_every_protocol(strict_box):
    creds = strict_box.credentials("admin")
    for service, call in (("sts", lambda c: c.get_caller_identity()),
                          ("dynamodb", lambda c: c.list_tables()),
                          ("ec2", lambda c: c.describe_regions()),
                          ("cloudwatch", lambda c: c.describe_alarms())):
        client = boto3.client(service, endpoint_url=strict_box.endpoint,
                              region_name="us-east-1",
                              aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key="not-the-secret")
        with pytest.raises(ClientError) as raised:
            call(client)
        assert raised.value.response["Error"]["Code"] in (
            "SignatureDoesNotMatch", "InvalidSignatureException", "AuthFailure"), service


def _signed_at(box, service: str, url: str, moment: float) -> AWSRequest:
    import datetime as dt
    from unittest import mock

    creds = box.credentials("admin")
    keys = Credentials(creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"])
    request = AWSRequest(method="GET", url=url)
    then = dt.datetime.fromtimestamp(moment, dt.UTC).replace(tzinfo=None)
    signer = S3SigV4Auth if service == "s3" else SigV4Auth
    with mock.patch("botocore.auth.get_current_datetime", return_value=then):
        signer(keys, service, "us-east-1").add_auth(request)
    return request


@pytest.mark.parametrize("offset", [-16 * 60, 16 * 60])
def test_a_signature_far_from_the_servers_clock_is_refused(strict_box, offset):
    import time

    url = f"{strict_box.endpoint}/?list-type=2"
    request = _signed_at(strict_box, "s3", url, time.time() + offset).prepare()
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(urllib.request.Request(request.url, headers=dict(request.headers)),
                               timeout=10)
    assert raised.value.code == 403 and b"RequestTimeTooSkewed" in raised.value.read()
    request = _signed_at(strict_box, "s3", url, time.time() - 5 * 60).prepare()
    with urllib.request.urlopen(urllib.request.Request(
            request.url, headers=dict(request.headers)), timeout=10) as answer:
        assert answer.status == 200


def test_the_skew_check_names_the_times():
    request = sigv4.WireRequest.build("GET", "/", [("X-Amz-Date", "20260101T000000Z")], b"")
    auth = sigv4.Authorization("AKID", "20260101", "us-east-1", "sts", ("host",), "0" * 64)
    assert sigv4.skew(request, auth, now=1767225600.0 + 60) is None
    assert sigv4.skew(request, auth, now=1767225600.0 + 3600).startswith(
        "Signature expired: 20260101T000000Z is now earlier than 20260101T004500Z")
    other_day = sigv4.Authorization("AKID", "20251231", "us-east-1", "sts", ("host",), "0" * 64)
    assert "credential scope's date" in sigv4.skew(request, other_day, now=1767225600.0)
