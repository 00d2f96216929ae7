import pytest

from cloud.errors import ConfigError
from cloud.settings import validate
from tests.conftest import deep_merge, project_config


def check(**overrides):
    return validate(deep_merge(project_config(), overrides), ["invoke.yaml"])


def test_project_defaults_are_valid():
    settings = check()
    assert settings.target == "sandbox"
    assert settings.accounts.prod.id == "222222222222"
    assert settings.bake.base_ami.id is None


def test_unknown_key_names_the_key_the_file_and_the_nearest_name():
    with pytest.raises(ConfigError) as error:
        check(bake={"instnce_type": "t3.micro"})
    message = str(error.value)
    assert message.startswith("invoke.yaml: kiln.bake.instnce_type: unknown key")
    assert "did you mean 'instance_type'?" in message


def test_wrong_type_and_bad_choice_are_named():
    with pytest.raises(ConfigError, match=r"kiln\.bake\.ssh_port: expected a whole number"):
        check(bake={"ssh_port": "twenty-two"})
    with pytest.raises(ConfigError, match=r"kiln\.target: 'gcp' is not one of sandbox, aws"):
        check(target="gcp")


def test_environment_strings_are_coerced():
    settings = check(bake={"ssh_port": "2222", "sudo": "false"})
    assert settings.bake.ssh_port == 2222 and settings.bake.sudo is False


def test_account_fields_are_checked_per_account():
    with pytest.raises(ConfigError, match=r"kiln\.accounts\.prod\.rolee: unknown key"):
        check(accounts={"prod": {"id": "1", "rolee": "x"}})
    with pytest.raises(ConfigError, match=r"kiln\.accounts\.staging\.id: missing"):
        check(accounts={"staging": {"role": "x"}})
