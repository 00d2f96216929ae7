"""The command line as one product: short flags, missing flags, settings from the environment,
read-only tasks and the sandbox's export lines."""

import subprocess

import boto3
import pytest

import tasks
from cloud.tasking import SHORT_FLAGS
from tests.conftest import INVOKE, ROOT


def all_tasks(collection, prefix=""):
    for name, task in collection.tasks.items():
        yield prefix + name, task
    for name, sub in collection.collections.items():
        yield from all_tasks(sub, f"{prefix}{name}.")


def test_a_short_flag_means_one_thing_in_every_task():
    assert len(set(SHORT_FLAGS.values())) == len(SHORT_FLAGS)
    seen = {}
    for name, task in all_tasks(tasks.ns):
        for argument in task.get_arguments():
            shorts = [n for n in argument.names if len(n) == 1]
            assert shorts == ([SHORT_FLAGS[argument.attr_name or argument.name]]
                              if (argument.attr_name or argument.name) in SHORT_FLAGS else []), (
                name, argument.names)
            for short in shorts:
                seen.setdefault(short, set()).add(argument.name)
    assert all(len(longs) == 1 for longs in seen.values()), seen


def test_a_missing_required_flag_is_one_kiln_line(run_invoke):
    result = run_invoke("ami.promote", "--version", "1.0.0")
    assert result.returncode == 4  # refused: bad input
    assert result.stderr.strip().splitlines() == [
        "kiln: ami.promote: --to is required (invoke --help ami.promote)"]
    result = run_invoke("bake")
    assert result.stderr.strip().splitlines() == [
        "kiln: bake: --version is required (invoke --help bake)"]


def test_a_mistyped_environment_variable_fails_like_a_mistyped_key(run_invoke):
    result = run_invoke("status", env={"INVOKE_KILN_DEPLOY_WACTH": "1s"})
    assert result.returncode == 4
    assert result.stderr.strip().splitlines()[-1] == (
        "kiln: environment variable INVOKE_KILN_DEPLOY_WACTH: no such kiln setting (did you "
        "mean INVOKE_KILN_DEPLOY_WATCH?)")


def test_read_only_tasks_do_not_start_the_sandbox(run_invoke, tmp_path):
    idle = tmp_path / "idle-sandbox"
    for task in ("status", "repo.list"):
        result = run_invoke(task, overrides={"sandbox": {"state_dir": str(idle)}})
        assert result.returncode == 1
        assert "is not running, so there is nothing to read: `invoke sandbox.up` starts it" in (
            result.stderr.strip().splitlines()[-1])
    assert not (idle / "moto.pid").exists() and not (idle / "sshd").exists()


def test_sandbox_env_prints_another_accounts_credentials(run_invoke, clean_sandbox):
    run_invoke("bootstrap", "--yes", "--account", "prod", check=True)  # its deployer role
    result = run_invoke("sandbox.env", "--account", "prod", check=True)
    values = dict(line.removeprefix("export ").split("=", 1)
                  for line in result.stdout.splitlines())
    assert values["AWS_ENDPOINT_URL"] == clean_sandbox.secure_endpoint
    assert values["AWS_CA_BUNDLE"] == str(clean_sandbox.ca_bundle)
    session = boto3.Session(aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"],
                            aws_session_token=values["AWS_SESSION_TOKEN"],
                            region_name=values["AWS_REGION"])
    sts = session.client("sts", endpoint_url=values["AWS_ENDPOINT_URL"])
    assert sts.get_caller_identity()["Account"] == "222222222222"


def test_sandbox_env_gives_no_account_credentials_for_real_aws(run_invoke, sandbox_box):
    result = run_invoke("sandbox.env", "--account", "prod", overrides={"target": "aws"})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "kiln: sandbox.env --account prod: kiln.target is aws; the sandbox's accounts are only "
        "the sandbox target's"]


def test_a_runtime_file_may_give_the_apps_environment_and_secrets(run_invoke):
    """invoke.yaml's defaults for mappings are mappings: Invoke cannot merge a file's mapping
    over a null, and answered with a traceback."""
    overrides = {"deploy": {"user_data": {"environment": {"LOG_LEVEL": "debug"},
                                          "secrets": {"DB_URL": "ssm:/app/db-url"}}}}
    result = run_invoke("status", "--json", overrides=overrides)
    assert "Traceback" not in result.stderr and "AmbiguousMergeError" not in result.stderr
    # The settings loaded: status went on to read AWS (bootstrapped or not, it says so in a line).
    assert result.stderr.startswith("target: sandbox"), result.stderr


def test_a_secret_in_the_user_data_environment_is_refused_before_anything_is_made(run_invoke):
    """User data is readable by whoever may describe the launch template: a password there is
    refused at load, in one line naming the file and the field, never echoing the value."""
    overrides = {"deploy": {"user_data": {"environment": {
        "DATABASE_URL": "postgres://app:hunter2@db.internal/app"}}}}
    result = run_invoke("deploy", "--version", "1.0.0", overrides=overrides)
    assert result.returncode == 4 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()  # no target line: nothing was reached or made
    assert line.startswith("kiln: ") and "kiln-test.yaml" in line, line
    assert "kiln.deploy.user_data.environment.DATABASE_URL: its value looks like a secret" in line
    assert "kiln.deploy.user_data.secrets" in line and "hunter2" not in line


@pytest.mark.parametrize(("text", "why"), [
    ("kiln:\n  app: " + "[" * 50000 + "]" * 50000 + "\n", "nested too deeply"),
    ("kiln:\n  app: [unclosed\n", "expected ',' or ']'"),
])
def test_an_unreadable_runtime_file_is_one_line(tmp_path, text, why):
    """Invoke reads `-f FILE` after loading tasks.py and answered a malformed or 50,000-deep
    YAML file with a traceback."""
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    result = subprocess.run([INVOKE, "-f", str(path), "status"], cwd=ROOT, text=True,
                            capture_output=True, timeout=120)
    assert result.returncode == 4 and result.stdout == "", result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"kiln: {path}: not a YAML file Kiln can read") and why in line, line
