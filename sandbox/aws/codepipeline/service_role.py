"""What CodePipeline and CodeBuild do with their roles, decided by the sandbox's IAM.

On AWS both services act with a role: the pipeline's reads the source object, writes artifacts,
starts builds and publishes approval notices; a project's service role reads the input artifact,
writes the output, the build's logs and whatever the buildspec's commands call. Here the services
run inside the server and touch moto's backends directly, so each such step first asks
sandbox.aws.iam.access_control.role_allows, as a signed request of the role's session would be
decided; a refusal fails the action or build with AWS's message, and is logged to iam.log.
"""

from __future__ import annotations

from sandbox.aws.iam import identities
from sandbox.aws.iam import policy as iam


class Refused(Exception):
    """The role may not do a step: the action or build fails with this message."""


def check(role_arn: str, session: str, action: str, resource: str, region: str) -> None:
    from sandbox.aws.iam.access_control import role_allows

    allowed, why = role_allows(role_arn, session, action, resource, region)
    if not allowed:
        raise Refused(why)


def trusts(role_arn: str, service: str, source: str | None = None) -> bool:
    """The role exists and its trust policy lets `service` (codebuild.amazonaws.com) assume it;
    `source`: the ARN of the resource the service acts for (a CodeBuild project), given as
    aws:SourceArn and aws:SourceAccount, as AWS's services give them (a trust policy's guard
    against the confused deputy)."""
    role = identities.role_by_arn(role_arn)
    if role is None:
        return False
    context = {"aws:SecureTransport": True}
    if source:
        context.update({"aws:SourceArn": source, "aws:SourceAccount": source.split(":")[4]})
    found = iam.evaluate([role.assume_role_policy_document], "sts:AssumeRole", role_arn,
                         context, principal={"service": service})
    return found == iam.Result.ALLOW


def read_object(role_arn: str, session: str, region: str, bucket: str, key: str,
                version: str | None = None):
    """The S3 object (moto's FakeKey), read as the role: s3:GetObject(Version) on it."""
    from moto.s3.models import s3_backends

    action = "s3:GetObjectVersion" if version else "s3:GetObject"
    check(role_arn, session, action, f"arn:aws:s3:::{bucket}/{key}", region)
    account = role_arn.split(":")[4]
    found = s3_backends[account]["aws"].get_object(bucket, key, version_id=version)
    if found is None:
        raise Refused(f"The object s3://{bucket}/{key} does not exist")
    return found


def write_object(role_arn: str, session: str, region: str, bucket: str, key: str,
                 body: bytes) -> None:
    """Put an object as the role: s3:PutObject on it."""
    from moto.s3.models import s3_backends

    check(role_arn, session, "s3:PutObject", f"arn:aws:s3:::{bucket}/{key}", region)
    account = role_arn.split(":")[4]
    s3_backends[account]["aws"].put_object(bucket, key, body)
