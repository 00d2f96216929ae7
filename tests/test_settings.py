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
    with pytest.raises(ConfigError, match=r"kiln\.sandbox\.account_state: 'used' is not one "
                                          r"of new, lived-in"):
        check(sandbox={"account_state": "used"})
    assert check(sandbox={"account_state": "lived-in"}).sandbox.account_state == "lived-in"


def test_environment_strings_are_coerced():
    settings = check(bake={"ssh_port": "2222", "sudo": "false"})
    assert settings.bake.ssh_port == 2222 and settings.bake.sudo is False


def test_account_fields_are_checked_per_account():
    with pytest.raises(ConfigError, match=r"kiln\.accounts\.prod\.rolee: unknown key"):
        check(accounts={"prod": {"id": "1", "rolee": "x"}})
    with pytest.raises(ConfigError, match=r"kiln\.accounts\.staging\.id: missing"):
        check(accounts={"staging": {"role": "x"}})


REAL = {"build": {"id": "310987654321"},
        "prod": {"id": "410987654321", "role": "kiln-deployer", "external_id": "d41f0c2e-real"}}


def test_sandbox_accounts_apply_only_to_the_sandbox():
    real = check(target="aws", accounts={"build": {"id": "310987654321"}})
    assert dict(real.accounts) == {"build": {"id": "310987654321", "role": None,
                                             "external_id": None, "admin_role": None,
                                             "profile": None, "admin_profile": None}}
    assert check().accounts.build.id == "123456789012"


@pytest.mark.parametrize(("field", "value", "named"), [
    ("id", "222222222222", "kiln.accounts.prod.id: 222222222222"),
    ("external_id", "kiln-sandbox-external-id", "kiln.accounts.prod.external_id"),
])
def test_real_target_refuses_sandbox_placeholders(field, value, named):
    accounts = deep_merge(REAL, {"prod": {field: value}})
    with pytest.raises(ConfigError, match=f"{named}.*sandbox"):
        check(target="aws", accounts=accounts)
    assert check(target="aws", accounts=REAL).accounts.prod.id == "410987654321"


def test_real_target_refuses_a_placeholder_that_is_no_account_id():
    with pytest.raises(ConfigError, match=r"kiln\.accounts\.build\.id: '<build account id>' is "
                                          r"not a 12-digit AWS account id"):
        check(target="aws", accounts={"build": {"id": "<build account id>"}})


@pytest.mark.parametrize(("field", "value"), [("id", "222222222222"),
                                              ("external_id", "kiln-sandbox-external-id")])
def test_a_custom_endpoint_does_not_let_the_sandbox_placeholders_through(field, value):
    """kiln.aws.endpoint_url may name a proxy in front of AWS itself: the placeholders would
    then be trusted and shared with there."""
    accounts = deep_merge(REAL, {"prod": {field: value}})
    with pytest.raises(ConfigError, match=rf"kiln\.accounts\.prod\.{field}: {value} is the "
                                          rf"sandbox's placeholder"):
        check(target="aws", accounts=accounts, aws={"endpoint_url": "https://proxy.example:8443"})
    with pytest.raises(ConfigError, match=r"kiln\.accounts\.build\.id: 'build' is not a "
                                          r"12-digit AWS account id"):
        check(target="aws", accounts={"build": {"id": "build"}},
              aws={"endpoint_url": "https://proxy.example:8443"})


def test_readme_real_aws_example_uses_no_sandbox_or_real_looking_ids():
    import re

    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    example = readme.split("## Pointing Kiln at real AWS accounts", 1)[1].split("```yaml", 1)[1]
    example = example.split("```", 1)[0]
    assert not re.search(r"\b\d{12}\b", example), example
    assert "kiln-sandbox-external-id" not in example


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_ssh_from_anywhere_needs_saying_so(cidr):
    with pytest.raises(ConfigError, match=rf"kiln\.bake\.ssh_cidrs: {cidr} lets anyone reach "
                                          rf"SSH.*kiln\.bake\.ssh_from_anywhere"):
        check(bake={"ssh_cidrs": ["10.0.0.0/8", cidr]})
    meant = check(bake={"ssh_cidrs": [cidr], "ssh_from_anywhere": True})
    assert meant.bake.ssh_cidrs == [cidr]


def test_ssh_cidrs_must_be_networks():
    with pytest.raises(ConfigError, match=r"kiln\.bake\.ssh_cidrs: 'office' is not a CIDR"):
        check(bake={"ssh_cidrs": ["office"]})


SECRET_NAMES = ["DB_PASS", "DB_PASSWORD", "ADMIN_PASSWD", "CLIENT_SECRET", "SECRET_KEY_BASE",
                "GITHUB_TOKEN", "SIGNING_KEY", "STRIPE_SK", "SENDGRID_API_KEY", "APIKEY",
                "AWS_SECRET_ACCESS_KEY", "PRIVATE_KEY_PEM", "db_credentials"]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_user_data_environment_refuses_secret_like_names(name):
    with pytest.raises(ConfigError, match=rf"^invoke\.yaml: kiln\.deploy\.user_data\.environment"
                                          rf"\.{name}: looks like a secret.*"
                                          rf"kiln\.deploy\.user_data\.secrets"):
        check(deploy={"user_data": {"environment": {name: "x"}}})


@pytest.mark.parametrize(("name", "value"), [
    ("DATABASE_URL", "postgres://app:hunter2@db.internal:5432/app"),
    ("CACHE", "redis://:hunter2@cache.internal:6379/0"),
    ("UPSTREAM", "https://deploy:hunter2@git.example.com/repo.git"),
    ("PAYMENTS", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("AWS_ID", "AKIAIOSFODNN7EXAMPLE"),
])
def test_user_data_environment_refuses_secret_like_values_without_printing_them(name, value):
    with pytest.raises(ConfigError, match=rf"kiln\.deploy\.user_data\.environment\.{name}: "
                                          rf"its value looks like a secret") as error:
        check(deploy={"user_data": {"environment": {name: value}}})
    assert "hunter2" not in str(error.value) and value not in str(error.value)


def test_user_data_environment_keeps_ordinary_settings():
    ordinary = {"LOG_LEVEL": "debug", "DATABASE_URL": "postgres://app@db.internal:5432/app",
                "PUBLIC_URL": "https://shop.example.com/", "STRIPE_PUBLISHABLE_KEY": "pk_live_1",
                "WORKERS": 4, "FEATURE_X": True, "KEYBOARD_LAYOUT": "us", "PASSENGER_LIMIT": 9}
    settings = check(deploy={"user_data": {"environment": ordinary}})
    assert settings.deploy.user_data.environment == ordinary


def test_user_data_environment_of_an_app_and_of_a_stack_is_checked_too():
    with pytest.raises(ConfigError, match=r"kiln\.apps\.billing\.deploy\.user_data\.environment"
                                          r"\.DB_PASS: looks like a secret"):
        check(apps={"billing": {"deploy": {"user_data": {"environment": {"DB_PASS": "x"}}}}})
    with pytest.raises(ConfigError, match=r"kiln\.apps\.billing\.stacks\[canary\]\.deploy\."
                                          r"user_data\.environment\.SIGNING_KEY: looks like"):
        check(apps={"billing": {"stacks": [{"name": "canary", "deploy": {
            "user_data": {"environment": {"SIGNING_KEY": "x"}}}}]}})


@pytest.mark.parametrize(("environment", "message"), [
    ({"1X": "a"}, r"environment\.1X: not a shell variable name"),
    ({"A": {"b": 1}}, r"environment\.A: expected a string, number or true/false"),
    ({"A": "one\ntwo"}, r"environment\.A: one line only"),
])
def test_user_data_environment_is_shell_names_and_one_line_values(environment, message):
    with pytest.raises(ConfigError, match=message):
        check(deploy={"user_data": {"environment": environment}})


def test_every_setting_has_an_environment_variable_of_its_own():
    """Invoke reads KILN_<PATH> for every key; two keys whose paths join to the same name
    (deploy.health.timeout and deploy.health_timeout) make it stop with AmbiguousEnvVar
    whenever that variable is set."""
    names: dict[str, list[str]] = {}

    def walk(tree: dict, path: tuple[str, ...]) -> None:
        for key, value in tree.items():
            if isinstance(value, dict) and value:
                walk(value, (*path, key))
            else:
                dotted = ".".join((*path, key))
                names.setdefault("_".join(("kiln", *path, key)).upper(), []).append(dotted)

    walk(project_config(), ())
    assert {name: keys for name, keys in names.items() if len(keys) > 1} == {}
