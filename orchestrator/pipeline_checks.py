"""`invoke bootstrap.verify` for a pipeline stack kiln-pipeline-<app>: its artifact bucket and its
topic as they are, not as the template says (a setting changed by hand shows up here).

The artifact bucket holds every source archive and build output of the app's releases, so it
is checked as the repository bucket is (private, encrypted, versioned: the S3 source needs
versions) and for the TLS-only statement the stack gives it. The topic carries approvals and
failures: encrypted, and no statement for everyone.
"""

from __future__ import annotations

from accounts import verify
from accounts.bootstrap import Place
from accounts.verify import Check


def check_artifact_bucket(place: Place, values: dict) -> Check:
    bucket = values["ArtifactBucketName"]
    check = Check(place.account, f"artifact bucket {bucket} is private, encrypted, versioned "
                                 f"and TLS-only")
    s3 = place.aws.client("s3")
    check.problems += verify.bucket_public_problems(s3, bucket)
    check.problems += verify.bucket_encryption_problems(s3, bucket)
    check.problems += verify.bucket_versioning_problems(s3, bucket)
    if not any(_refuses_plain_http(s) for s in verify.statements(verify.bucket_policy(s3,
                                                                                       bucket))):
        check.problems.append(f"bucket {bucket}: no policy statement denies requests without "
                              f"TLS (aws:SecureTransport false)")
    return check


def _refuses_plain_http(statement: dict) -> bool:
    keys = verify.condition_keys(statement)
    return (statement.get("Effect") == "Deny" and "*" in verify.principals(statement)
            and verify.action_covers(statement, "s3:GetObject")
            and verify.action_covers(statement, "s3:PutObject")
            and ("Bool", "false") in keys.get("aws:securetransport", []))


def check_topic(place: Place, values: dict) -> Check:
    topic = values["TopicArn"]
    check = Check(place.account, f"topic {topic} is encrypted and not public")
    attributes = place.aws.client("sns").get_topic_attributes(TopicArn=topic)["Attributes"]
    if not attributes.get("KmsMasterKeyId"):
        check.problems.append(f"topic {topic}: encryption is off (no KmsMasterKeyId)")
    check.problems += verify.public_statements(f"topic {topic}", attributes.get("Policy"))
    return check


CHECKS = (check_artifact_bucket, check_topic)
