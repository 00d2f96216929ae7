"""The SSM parameter a promotion writes lives under kiln.stacks.prefix, where the policy allows."""

from accounts import bootstrap
from cloud import stacks
from cloud.target import connect
from provisioner import promote
from tests.image_helpers import bootstrapped, make_image


def with_prefixed_operator(aws):
    """The operator policy bootstrap renders for this prefix (`<prefix>-operator`), attached to
    the sandbox's operator, whose own policy names the default prefix's keys and buckets."""
    admin = connect(aws.settings, admin=True)
    bootstrap.run(admin.settings, admin, yes=True, parts=("operator",))
    admin.client("iam").attach_user_policy(
        UserName="kiln-operator", PolicyArn=stacks.output(admin, "operator", "OperatorPolicyArn"))
    return aws


def test_parameter_path_follows_the_stack_prefix(kiln_settings, clean_sandbox):
    aws = with_prefixed_operator(
        bootstrapped(lambda **o: kiln_settings(stacks={"prefix": "acme"}, **o)))
    make_image(aws.client("ec2"), stacks.ami_key(aws))
    (promotion,) = promote.promote(aws, "hello-web", "1.4.2", "prod")["promotions"]
    assert promotion["parameter"] == "/acme/hello-web/prod/ami"
    ssm = aws.account("prod").client("ssm")
    value = ssm.get_parameter(Name="/acme/hello-web/prod/ami")["Parameter"]["Value"]
    assert value == promotion["image_id"]


def test_the_deployer_reads_image_parameters_but_not_the_apps_secrets(kiln_settings,
                                                                      clean_sandbox):
    """App secrets naturally live beside the image parameters, under /<prefix>/<app>/…; the
    deployer role needs only the images'."""
    import pytest
    from botocore.exceptions import ClientError

    from tests.deploy_helpers import admin_of

    aws = bootstrapped(kiln_settings)
    make_image(aws.client("ec2"), stacks.ami_key(aws))
    promote.promote(aws, "hello-web", "1.4.2", "prod")
    prod = aws.account("prod")
    admin_of(prod).client("ssm").put_parameter(Name="/kiln/hello-web/db-password",
                                               Value="hunter2", Type="SecureString")
    ssm = prod.client("ssm")
    assert ssm.get_parameter(Name="/kiln/hello-web/prod/ami")["Parameter"]["Value"]
    with pytest.raises(ClientError) as raised:
        ssm.get_parameter(Name="/kiln/hello-web/db-password", WithDecryption=True)
    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"
