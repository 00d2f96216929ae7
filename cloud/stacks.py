"""Find the support infrastructure through the outputs of the stacks `invoke bootstrap` made."""

from __future__ import annotations

from botocore.exceptions import ClientError

from cloud.aws import Aws
from cloud.errors import KilnError


def stack_name(settings, part: str) -> str:
    """`build`, `prod` or `env-<app>` → the CloudFormation stack name, e.g. kiln-build."""
    return f"{settings.stacks.prefix}-{part}"


def outputs(aws: Aws, part: str, region: str | None = None) -> dict[str, str]:
    """The outputs of one bootstrap stack in `aws`'s account, read once per session."""
    name = stack_name(aws.settings, part)
    region = region or aws.region
    cache = aws.__dict__.setdefault("_stack_outputs", {})
    if (name, region) not in cache:
        cache[(name, region)] = _read(aws, name, region)
    return cache[(name, region)]


def output(aws: Aws, part: str, key: str, region: str | None = None) -> str:
    values = outputs(aws, part, region)
    if key not in values:
        raise KilnError(f"stack {stack_name(aws.settings, part)} in account {aws.account_name} "
                        f"has no output {key}: run `invoke bootstrap` to update it")
    return values[key]


def ami_key(aws: Aws, region: str | None = None) -> str:
    """The key `aws`'s account encrypts its AMIs with in `region`: in the main region an output
    of the account's own stack (kiln-build, kiln-prod), in a copy region of its kiln-keys stack."""
    settings = aws.settings
    region = region or aws.region
    if region != settings.aws.region:
        part = "keys"
    else:
        part = "build" if aws.account_name == settings.build_account else "prod"
    try:
        return output(aws, part, "AmiKmsKeyArn", region)
    except KilnError:
        listed = region == settings.aws.region or region in settings.bake.copy_regions
        hint = "" if listed else f" with {region} in kiln.bake.copy_regions"
        raise KilnError(f"no AMI key for account {aws.account_name} in {region} (stack "
                        f"{stack_name(settings, part)}): run `invoke bootstrap`{hint}") from None


def _read(aws: Aws, name: str, region: str) -> dict[str, str]:
    try:
        stacks = aws.client("cloudformation", region).describe_stacks(StackName=name)["Stacks"]
    except ClientError as error:
        if "does not exist" in str(error):
            raise KilnError(f"stack {name} not found in account {aws.account_name} "
                            f"({aws.account_id}), region {region}: run `invoke bootstrap`"
                            ) from None
        raise
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
