"""The repository's signing key in the builds of an app's pipeline on CodePipeline.

The stages that may publish to the repository (commit, image) sign its packages and metadata, so
their builds need the private key of `kiln.repo.gpg_key`. It is kept in a Secrets Manager secret
of the stack kiln-pipeline-<app> (`<prefix>-pipeline-<app>/repo-signing-key`, encrypted with the
pipeline's KMS key), never in a template, a parameter, an environment variable or a log:

- `invoke pipeline.key --app APP` puts it there from the operator's GnuPG home, once it is the
  key the repository is pinned to (kiln.repo.key_fingerprint, else the build stack's output
  RepoKeyFingerprint), since metadata signed by another would be refused by every reader;
- a signing stage's build runs `invoke pipeline.key --app APP --import` before its command: the
  key is imported into a GnuPG home of the build's own (kiln.repo.gpg_home, a fresh private
  folder), and Kiln then signs with it (kiln.repo.gpg_key, which the project sets to the
  recorded fingerprint). Only those projects' roles may read the secret.
"""

from __future__ import annotations

import os

from botocore.exceptions import ClientError

from cloud import stacks
from cloud.console import say
from cloud.errors import KilnError, Refused
from packager import signing

OUTPUT = "SigningKeySecretArn"
NAME = "{prefix}-pipeline-{app}/repo-signing-key"


def secret_name(settings, app: str) -> str:
    return NAME.format(prefix=settings.stacks.prefix, app=app)


def _secret_arn(aws, app: str) -> str:
    from orchestrator import codepipeline

    values = stacks.outputs(aws, codepipeline.PART.format(app=app))
    if OUTPUT not in values:
        raise Refused(f"stack {codepipeline.pipeline_name(aws.settings, app)} has no signing "
                      f"key secret ({OUTPUT}): its repository is unsigned (kiln.repo.sign) or "
                      f"the stack predates it; run `invoke bootstrap`")
    return values[OUTPUT]


def _local_signer(settings):
    signer = signing.from_settings(settings)
    if signer is None:
        raise Refused("kiln.repo.sign: false, so the pipeline's builds sign nothing and need "
                      "no key")
    return signer


def _pinned(aws) -> str | None:
    """The fingerprint readers trust: configured, else recorded in the build stack."""
    try:
        recorded = stacks.outputs(aws, "build").get("RepoKeyFingerprint") or None
    except KilnError:
        recorded = None
    return signing.pinned_fingerprint(aws.settings, recorded,
                                      stacks.stack_name(aws.settings, "build"))


def put(aws, app: str, dry_run: bool = False) -> dict:
    """Put the local signing key (kiln.repo.gpg_key) into the pipeline's secret."""
    signer = _local_signer(aws.settings)
    fingerprint, pinned = signer.fingerprint(), _pinned(aws)
    if pinned and fingerprint != pinned:
        raise Refused(f"kiln.repo.gpg_key: {signer.key} is key {fingerprint}, but the "
                      f"repository is pinned to {pinned}: the builds would sign what every "
                      f"reader refuses; name that key, or run `invoke bootstrap` to record "
                      f"the new one")
    arn, name = _secret_arn(aws, app), secret_name(aws.settings, app)
    result = {"app": app, "secret": name, "fingerprint": fingerprint, "dry_run": dry_run}
    if dry_run:
        say(f"pipeline {app}: would put signing key {fingerprint} in secret {name}")
        return result
    armored = signer.secret_key()
    put_value = aws.client("secretsmanager").put_secret_value(
        SecretId=arn, SecretString=armored.decode())
    say(f"pipeline {app}: signing key {fingerprint} put in secret {name} "
        f"(version {put_value['VersionId']})")
    return {**result, "version_id": put_value["VersionId"]}


def import_key(aws, app: str) -> dict:
    """In a signing stage's build: the secret's key into kiln.repo.gpg_home, checked to be the
    key Kiln signs with (kiln.repo.gpg_key) and the one the repository is pinned to."""
    settings = aws.settings
    home = settings.repo.gpg_home
    if not home or not os.path.isdir(home):
        raise Refused(f"kiln.repo.gpg_home: {home or 'not set'}: the key is imported into a "
                      f"GnuPG home of the build's own, an existing private folder")
    name = secret_name(settings, app)
    signer = _local_signer(settings)
    signer.import_keys(_secret_value(aws, app, name))
    if not signer.has_secret_key():  # another key: not the one the build signs with
        raise KilnError(f"secret {name}: holds no private key of {signer.key} "
                        f"(kiln.repo.gpg_key): run `invoke pipeline.key --app {app}` with the "
                        f"repository's signing key")
    fingerprint, pinned = signer.fingerprint(), _pinned(aws)
    if pinned and fingerprint != pinned:
        raise KilnError(f"secret {name}: holds key {fingerprint}, but the repository is pinned "
                        f"to {pinned}: run `invoke pipeline.key --app {app}` with that key")
    say(f"pipeline {app}: signing key {fingerprint} imported from secret {name}")
    return {"app": app, "secret": name, "fingerprint": fingerprint}


def _secret_value(aws, app: str, name: str) -> bytes:
    """The secret's armored key; a missing or empty one is one line naming the task to run."""
    missing = (f"secret {name}: no signing key in it yet: run `invoke pipeline.key --app {app}` "
               f"where the repository's signing key (kiln.repo.gpg_key) is")
    try:
        found = aws.client("secretsmanager").get_secret_value(SecretId=_secret_arn(aws, app))
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            raise KilnError(missing) from None
        raise
    value = found.get("SecretString") or ""
    if "PRIVATE KEY BLOCK" not in value:
        raise KilnError(missing)
    return value.encode()
