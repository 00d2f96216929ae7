"""EnableImageDeprecation and DisableImageDeprecation, which moto 5 answers with a 500.

As on AWS: the owner sets a deprecation time on an image (rounded up to the next whole minute),
DescribeImages shows it as DeprecationTime, and DisableImageDeprecation clears it.
(https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ami-deprecate.html)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from moto.core.parse import default_timestamp_parser
from moto.core.responses import ActionResult
from moto.ec2.exceptions import InvalidAMIIdError
from moto.ec2.models.amis import Ami
from moto.ec2.responses.amis import AmisResponse

from sandbox.aws import seams


def _owned(response, image_id: str) -> Ami:
    image = response.ec2_backend.amis.get(image_id)
    if image is None:
        raise InvalidAMIIdError(image_id)
    return image


def _rounded(value) -> str:
    when = value if isinstance(value, datetime) else default_timestamp_parser(str(value))
    when = when.astimezone(UTC)
    if when.second or when.microsecond:
        when = when.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def enable_image_deprecation(self) -> ActionResult:
    self.error_on_dryrun()
    image = _owned(self, self._get_param("ImageId"))
    image.deprecation_time = _rounded(self._get_param("DeprecateAt"))
    return ActionResult({"Return": True})


def disable_image_deprecation(self) -> ActionResult:
    self.error_on_dryrun()
    _owned(self, self._get_param("ImageId")).deprecation_time = None
    return ActionResult({"Return": True})


def apply(state_dir: Path) -> None:
    seams.add(Ami, "deprecation_time", None, owner=__name__)
    seams.add(AmisResponse, "enable_image_deprecation", enable_image_deprecation,
              owner=__name__)
    seams.add(AmisResponse, "disable_image_deprecation", disable_image_deprecation,
              owner=__name__)
