"""`invoke bootstrap` records the repository signing key's fingerprint (the build stack's output
RepoKeyFingerprint), and that record is the pin when kiln.repo.key_fingerprint is not set: a
signing key swapped on the operator's machine (or in a borrowed config) does not move the pin. A
configured fingerprint that is not the recorded one fails in one line."""

from __future__ import annotations

import subprocess

import pytest

from accounts import bootstrap
from cloud.errors import KilnError
from cloud.stacks import stack_name
from cloud.target import connect
from packager import repo, signing
from tests.repo_helpers import build_rpm

OTHER = "0123456789ABCDEF0123456789ABCDEF01234567"


def bootstrapped(kiln_settings, **overrides):
    admin = connect(kiln_settings(**overrides), admin=True)
    bootstrap.run(admin.settings, admin, yes=True, parts=("build",))
    return admin


def build_stack(aws) -> dict:
    cfn = aws.client("cloudformation")
    return cfn.describe_stacks(StackName=stack_name(aws.settings, "build"))["Stacks"][0]


@pytest.fixture
def other_key(tmp_path):
    """A GnuPG home holding another signing key (no passphrase): the one a swapped config names."""
    home = tmp_path / "other-gnupg"
    home.mkdir(mode=0o700)
    subprocess.run(["gpg", "--batch", "--homedir", str(home), "--passphrase", "",
                    "--quick-gen-key", "Other <other@example.invalid>", "ed25519", "sign",
                    "never"], check=True, capture_output=True)
    fingerprint = signing.Signer("other@example.invalid", str(home)).fingerprint()
    yield {"gpg_home": str(home), "gpg_key": fingerprint}
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={"GNUPGHOME": str(home)},
                   check=False, capture_output=True)


def test_bootstrap_records_the_signing_key_fingerprint(clean_sandbox, kiln_settings):
    admin = bootstrapped(kiln_settings)
    stack = build_stack(admin)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["RepoKeyFingerprint"] == signing.from_settings(admin.settings).fingerprint()
    tags = {t["Key"]: t["Value"] for t in stack["Tags"]}
    assert tags["kiln:stack"] == "build" and tags["kiln:managed-by"] == "kiln"


def test_unsigned_repository_records_nothing(clean_sandbox, kiln_settings):
    admin = bootstrapped(kiln_settings, repo={"sign": False})
    assert "RepoKeyFingerprint" not in {o["OutputKey"] for o in build_stack(admin)["Outputs"]}


def test_recorded_fingerprint_is_the_pin_not_the_local_key(clean_sandbox, kiln_settings,
                                                          other_key, tmp_path):
    recorded = signing.from_settings(bootstrapped(kiln_settings).settings).fingerprint()
    swapped = connect(kiln_settings(repo=other_key))
    assert repo.Repo.of(swapped).pinned == recorded
    with pytest.raises(KilnError, match=f"is key {other_key['gpg_key']}, but the repository "
                                        f"is pinned to {recorded}"):
        repo.publish(swapped, build_rpm(tmp_path, "alpha", "1.0.0"))


def test_configured_fingerprint_must_be_the_recorded_one(clean_sandbox, kiln_settings,
                                                         run_invoke, tmp_path):
    recorded = signing.from_settings(bootstrapped(kiln_settings).settings).fingerprint()
    aws = connect(kiln_settings(repo={"key_fingerprint": recorded}))
    assert repo.Repo.of(aws).pinned == recorded
    rpm = build_rpm(tmp_path, "alpha", "1.0.0")
    result = run_invoke("publish", "--rpm", str(rpm), overrides={"repo": {
        "key_fingerprint": OTHER}})
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert f"kiln.repo.key_fingerprint: {OTHER} is not the repository signing key `invoke " \
           f"bootstrap` recorded ({recorded}, output RepoKeyFingerprint of stack kiln-build" in last
