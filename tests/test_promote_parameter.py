"""The SSM parameter a promotion writes lives under kiln.stacks.prefix, where the policy allows."""

from cloud import stacks
from provisioner import promote
from tests.image_helpers import bootstrapped, make_image


def test_parameter_path_follows_the_stack_prefix(kiln_settings, clean_sandbox):
    aws = bootstrapped(lambda **o: kiln_settings(stacks={"prefix": "acme"}, **o))
    make_image(aws.client("ec2"), stacks.ami_key(aws))
    (promotion,) = promote.promote(aws, "hello-web", "1.4.2", "prod")["promotions"]
    assert promotion["parameter"] == "/acme/hello-web/prod/ami"
    ssm = aws.account("prod").client("ssm")
    value = ssm.get_parameter(Name="/acme/hello-web/prod/ami")["Parameter"]["Value"]
    assert value == promotion["image_id"]
