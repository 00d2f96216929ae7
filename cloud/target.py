"""Where Kiln acts: the sandbox (the embedded default) or real AWS. Always said out loud first."""

from __future__ import annotations

import os

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from cloud.aws import Aws, account_spec, endpoint_url, new_session
from cloud.console import say
from cloud.errors import KilnError
from cloud.settings import Settings


def connect(settings: Settings, read_only: bool = False, admin: bool = False) -> Aws:
    """A session in the build account of the configured target, after printing that target.
    `read_only`: the task only reads, so a sandbox that is not running is not started.

    Day-to-day tasks run as the operator (the build account's `profile`, in the sandbox its
    operator user); `admin` is for `invoke bootstrap`: the account's `admin_profile` when set,
    in the sandbox its admin user."""
    name = settings.build_account
    spec = account_spec(settings, name)
    profile = (spec.admin_profile or spec.profile) if admin else spec.profile
    keys = {}
    if settings.target == "sandbox":
        from sandbox import control  # the only place Kiln reaches into the sandbox

        box = control.ensure_up(settings, start=not read_only)
        # In a build of the sandbox's CodeBuild, none: the build's own, as on AWS.
        credentials = box.credentials("admin" if admin else "operator")
        if credentials:
            keys = {"aws_access_key_id": credentials["AWS_ACCESS_KEY_ID"],
                    "aws_secret_access_key": credentials["AWS_SECRET_ACCESS_KEY"]}
        profile = None
    else:
        _real_endpoint(settings)
    session = new_session(profile_name=profile, region_name=settings.aws.region, **keys)
    aws = Aws(settings, session, name, spec.id)
    actual, aws.caller_arn = caller(aws)
    if actual != spec.id:
        raise KilnError(f"the credentials in use belong to account {actual}, but "
                        f"kiln.accounts.{name}.id is {spec.id}: fix one or the other")
    say(describe(aws))
    return aws


def _real_endpoint(settings: Settings) -> None:
    """With target aws, talk to AWS itself unless kiln.aws.endpoint_url names another endpoint:
    a leftover AWS_ENDPOINT_URL (the sandbox's) must not redirect a real run, nor the CA bundle
    that came with it (AWS_CA_BUNDLE) verify one."""
    configured, found = settings.aws.endpoint_url, os.environ.get("AWS_ENDPOINT_URL")
    bundle = os.environ.get("AWS_CA_BUNDLE")
    if configured:
        os.environ["AWS_ENDPOINT_URL"] = configured  # botocore and subprocesses alike
    elif found:
        also = f" (and AWS_CA_BUNDLE, {bundle}, set with it)" if bundle else ""
        raise KilnError(f"AWS_ENDPOINT_URL is set ({found}) but kiln.target is aws: unset "
                        f"it{also}, or set kiln.aws.endpoint_url to use that endpoint on purpose")


def caller(aws: Aws) -> tuple[str, str]:
    """(account id, ARN) of the credentials in use."""
    try:
        identity = aws.client("sts").get_caller_identity()
        return identity["Account"], identity["Arn"]
    except NoCredentialsError:
        raise KilnError("no AWS credentials found: set AWS_PROFILE or "
                        "kiln.accounts.<name>.profile, or use kiln.target: sandbox") from None
    except (ClientError, BotoCoreError) as error:
        raise KilnError(f"cannot reach AWS STS ({endpoint_url() or 'aws'}): {error}") from None


def describe(aws: Aws) -> str:
    where = f"{aws.account_name} account {aws.account_id}, region {aws.region}"
    if aws.sandbox:
        return f"target: sandbox (moto at {endpoint_url()}; {where})"
    custom = f" via endpoint {endpoint_url()} (kiln.aws.endpoint_url)" if endpoint_url() else ""
    return f"target: AWS ({where}){custom}"
