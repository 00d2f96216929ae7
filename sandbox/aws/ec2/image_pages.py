"""DescribeImages answers in pages when asked, as EC2 does (moto ignored MaxResults and
NextToken and answered every image at once).

AWS behaviour mirrored (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/
API_DescribeImages.html): MaxResults is 5 to 1000 and cannot be combined with ImageIds; an answer
holds at most MaxResults images and a NextToken while more remain; a request with that token
carries on where the last page ended. Without MaxResults every image comes in one answer.
"""

from __future__ import annotations

import base64
from pathlib import Path

from sandbox.aws import seams


def apply(state_dir: Path) -> None:
    from moto.ec2.responses.amis import AmisResponse

    seams.wrap(AmisResponse, "describe_images", _paged,
               signature="(self) -> moto.core.responses.ActionResult", owner=__name__)


def _paged(moto):
    def describe_images(self):
        size = self._get_param("MaxResults")
        token = self._get_param("NextToken")
        if size is None and token is None:
            return moto(self)
        size = int(size) if size is not None else 1000
        _check(self, size)
        result = moto(self)
        images = sorted(result.result["Images"], key=lambda i: i.id)
        start = _offset(token)
        result.result["Images"] = images[start:start + size]
        if start + size < len(images):
            result.result["NextToken"] = base64.urlsafe_b64encode(
                str(start + size).encode()).decode()
        return result

    return describe_images


def _check(response, size: int) -> None:
    from moto.ec2.exceptions import EC2ClientError, InvalidParameterCombination

    if response._get_param("ImageIds", []):
        raise InvalidParameterCombination(
            "The parameter imageIdsSet cannot be used with the parameter maxResults")
    if not 5 <= size <= 1000:
        raise EC2ClientError("InvalidParameterValue",
            f"Value ( {size} ) for parameter maxResults is invalid. Expecting a value between "
            "5 and 1000.")


def _offset(token: str | None) -> int:
    from moto.ec2.exceptions import EC2ClientError

    if not token:
        return 0
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode())
    except ValueError:
        raise EC2ClientError("InvalidParameterValue",
                             f"Invalid value '{token}' for nextToken") from None
