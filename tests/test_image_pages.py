"""Images are listed page by page (cloud/images.py), and the sandbox pages DescribeImages as EC2
does (sandbox/aws/ec2/image_pages.py)."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from cloud.images import all_images
from tests.deploy_helpers import register_image


@pytest.fixture
def ec2(clean_sandbox):
    client = boto3.client("ec2", endpoint_url=clean_sandbox.endpoint, region_name="us-east-1")
    for number in range(12):
        register_image(client, f"other-tool-{number:02d}")
    return client


def test_describe_images_answers_in_pages_when_asked(ec2):
    first = ec2.describe_images(Owners=["self"], MaxResults=5)
    assert len(first["Images"]) == 5 and first["NextToken"]
    seen = [i["ImageId"] for i in first["Images"]]
    token = first["NextToken"]
    while token:
        page = ec2.describe_images(Owners=["self"], MaxResults=5, NextToken=token)
        seen += [i["ImageId"] for i in page["Images"]]
        token = page.get("NextToken")
    assert sorted(seen) == sorted(i["ImageId"] for i in
                                  ec2.describe_images(Owners=["self"])["Images"])
    assert len(set(seen)) == 12
    with pytest.raises(ClientError, match="InvalidParameterValue"):
        ec2.describe_images(Owners=["self"], MaxResults=2000)


def test_kiln_reads_every_page_of_images(ec2):
    calls = []
    ec2.meta.events.register("after-call.ec2.DescribeImages", lambda **_: calls.append(1))
    found = all_images(ec2, page_size=5, Owners=["self"])
    assert len(found) == 12 and len(calls) == 3
