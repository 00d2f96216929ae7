"""The server groups' boot script, run by bash with the AWS CLI against the sandbox: the
environment file is 0600 and secrets arrive by reference, never in user data."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cloud.errors import KilnError
from cloud.settings import Settings
from orchestrator.groups import boot_script

AWS_CLI = str(Path(sys.executable).with_name("aws"))


def settings(tmp_path, **changes) -> Settings:
    values = {"env_file": str(tmp_path / "etc/kiln/environment"), "environment": None,
              "secrets": None, "command": None}
    return Settings({**values, **changes})


def run(script: str, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "boot.sh"
    path.write_text(script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "aws").exists():
        (bin_dir / "aws").symlink_to(AWS_CLI)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    return subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env,
                          timeout=120)


def test_environment_file_is_private_and_secrets_come_by_reference(aws, admin_aws, tmp_path):
    name = f"/kiln/test/{uuid.uuid4().hex[:8]}/db-password"
    secret = "s3cr3t with spaces & 'quotes'"
    admin_aws.client("ssm").put_parameter(Name=name, Value=secret, Type="SecureString")
    token = admin_aws.client("secretsmanager").create_secret(
        Name=f"kiln-test-{uuid.uuid4().hex[:8]}", SecretString="t0ken")["ARN"]
    script = boot_script(settings(tmp_path, environment={"LOG_LEVEL": "debug"},
                                  secrets={"DB_PASSWORD": f"ssm:{name}",
                                           "API_TOKEN": f"secretsmanager:{token}"}),
                         {"KILN_APP": "hello-web"}, None, aws.region)
    assert secret not in script and "t0ken" not in script
    done = run(script, tmp_path)
    assert done.returncode == 0, done.stderr
    env_file = tmp_path / "etc/kiln/environment"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    read = subprocess.run(["bash", "-c", f"set -a; . {env_file}; "
                           "printf '%s|%s|%s' \"$DB_PASSWORD\" \"$API_TOKEN\" \"$LOG_LEVEL\""],
                          capture_output=True, text=True, check=True)
    assert read.stdout == f"{secret}|t0ken|debug"


def test_a_missing_secret_fails_the_boot_script(aws, tmp_path):
    script = boot_script(settings(tmp_path, secrets={"DB_PASSWORD": "ssm:/kiln/no/such"}),
                         {}, None, aws.region)
    assert run(script, tmp_path).returncode != 0


@pytest.mark.parametrize(("field", "value", "message"), [
    ("environment", {"DB_PASSWORD": "hunter2"}, "environment.DB_PASSWORD: looks like a secret"),
    ("secrets", {"DB_PASSWORD": "vault:x"}, "secrets.DB_PASSWORD: 'vault:x' is not ssm:"),
])
def test_secret_values_in_user_data_are_refused(tmp_path, field, value, message):
    with pytest.raises(KilnError, match=message):
        boot_script(settings(tmp_path, **{field: value}), {}, None, "us-east-1")
