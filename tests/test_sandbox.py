import subprocess
from datetime import UTC, datetime

import boto3
import pytest

from accounts import bootstrap
from cloud.errors import KilnError
from cloud.target import connect
from sandbox.control import Sandbox


def test_second_up_reuses_the_running_server(sandbox_box):
    endpoint = sandbox_box.endpoint
    assert Sandbox(sandbox_box.state_dir).up() == endpoint
    assert sandbox_box.running()


def test_env_lines_drive_the_aws_cli(sandbox_box, clean_sandbox):
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="seen-by-cli")
    env = {"PATH": "/usr/bin:/bin", **sandbox_box.env("admin")}
    import shutil
    import sys
    from pathlib import Path

    aws_cli = shutil.which("aws") or str(Path(sys.executable).with_name("aws"))
    listing = subprocess.run([aws_cli, "s3", "ls"], env=env, capture_output=True, text=True,
                             check=True)
    assert "seen-by-cli" in listing.stdout


def test_reset_clears_resources(sandbox_box):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="to-be-reset")
    sandbox_box.reset()
    assert s3.list_buckets()["Buckets"] == []


def test_connect_prints_the_target_and_reaches_prod_by_assume_role(kiln_settings, capsys):
    admin = connect(kiln_settings(), admin=True)
    bootstrap.run(admin.settings, admin, yes=True, parts=("prod",))
    capsys.readouterr()
    aws = connect(kiln_settings())
    assert "target: sandbox (moto at https://127.0.0.1:" in capsys.readouterr().err
    prod = aws.account("prod")
    assert prod.client("sts").get_caller_identity()["Account"] == "222222222222"
    assert aws.calls.by_operation["sts:AssumeRole"] == 1


def test_connect_refuses_credentials_of_another_account(kiln_settings):
    import pytest

    from cloud.errors import KilnError

    with pytest.raises(KilnError, match="kiln.accounts.build.id is 999999999999"):
        connect(kiln_settings(accounts={"build": {"id": "999999999999"}}))


def test_sandbox_env_task_prints_export_lines(run_invoke, sandbox_box):
    result = run_invoke("sandbox.env", check=True)
    assert f"export AWS_ENDPOINT_URL={sandbox_box.secure_endpoint}" in result.stdout
    assert f"export AWS_CA_BUNDLE={sandbox_box.ca_bundle}" in result.stdout


def test_assumed_role_credentials_are_renewed_before_they_expire(kiln_settings):
    """Role sessions last an hour; a long teardown or promotion must not outlive them."""
    admin = connect(kiln_settings(), admin=True)
    bootstrap.run(admin.settings, admin, yes=True, parts=("prod",))
    prod = connect(kiln_settings()).account("prod")
    credentials = prod.session.get_credentials()
    first = credentials.get_frozen_credentials().access_key
    credentials._expiry_time = datetime.now(UTC)  # as if the hour had passed
    prod.client("ec2").describe_images(Owners=["self"])
    assert credentials.get_frozen_credentials().access_key != first
    assert prod.client("sts").get_caller_identity()["Arn"].startswith(
        "arn:aws:sts::222222222222:assumed-role/kiln-deployer/")


def test_real_target_refuses_a_stray_endpoint(kiln_settings, monkeypatch):
    """AWS_ENDPOINT_URL left over (e.g. from `invoke sandbox.env`) must not redirect a real run."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    accounts = {"build": {"id": "310987654321"}}
    with pytest.raises(KilnError, match="AWS_ENDPOINT_URL is set .*kiln.aws.endpoint_url"):
        connect(kiln_settings(target="aws", accounts=accounts))
