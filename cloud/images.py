"""Listing images page by page, as DescribeImages answers an account with many of them."""

from __future__ import annotations

# The largest page DescribeImages gives (its MaxResults range is 5 to 1000).
PAGE_SIZE = 1000


def all_images(ec2, page_size: int = PAGE_SIZE, **params) -> list[dict]:
    """Every image DescribeImages finds for `params` (Owners, Filters, ImageIds…), reading each
    page (MaxResults / NextToken) rather than trusting one answer to hold them all."""
    if params.get("ImageIds"):
        return ec2.describe_images(**params)["Images"]  # MaxResults may not name ImageIds
    pages = ec2.get_paginator("describe_images").paginate(
        **params, PaginationConfig={"PageSize": page_size})
    return [image for page in pages for image in page["Images"]]
