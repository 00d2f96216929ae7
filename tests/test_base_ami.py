"""The default base image: Amazon Linux 2023's kernel-default line, through Amazon's SSM parameter
(a name filter also matches the kernel-6.12 line Amazon publishes beside it)."""

import pytest

from cloud.errors import KilnError
from provisioner import base_ami


def test_default_base_image_is_the_one_the_al2023_parameter_names(aws, clean_sandbox):
    image = base_ami.resolve(aws, aws.settings.bake.base_ami)
    assert image["Name"] == "al2023-ami-2023.6.20241121.0-kernel-6.1-x86_64"
    assert image["OwnerId"] == "137112412989"


def test_a_missing_parameter_is_one_line(aws, clean_sandbox):
    spec = {"id": None, "filters": None, "owners": [], "parameter": "/aws/service/nope"}
    with pytest.raises(KilnError, match="kiln.bake.base_ami.parameter: SSM parameter "
                                        "/aws/service/nope not found in region us-east-1"):
        base_ami.resolve(aws, spec)
