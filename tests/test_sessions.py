"""cloud/aws.py: every Kiln session in a process reads botocore's service models once."""

import botocore.loaders

from cloud.target import connect
from tests.deploy_helpers import deployer


def loader_of(aws):
    return aws.session._session.get_component("data_loader")


def test_sessions_of_every_account_share_the_parsed_service_models(clean_sandbox, kiln_settings,
                                                                 monkeypatch):
    settings = kiln_settings()
    prod = deployer(settings)
    build = connect(settings)
    assert loader_of(prod) is loader_of(build)
    paths = list(loader_of(build).search_paths)
    build.client("ec2").describe_regions()
    parsed = []
    real_load = botocore.loaders.JSONFileLoader.load_file
    monkeypatch.setattr(botocore.loaders.JSONFileLoader, "load_file",
                        lambda self, path: parsed.append(path) or real_load(self, path))
    again = connect(settings).account("prod")
    again.client("ec2").describe_regions()
    # The new sessions' EC2, STS and endpoint models were already parsed.
    assert parsed == []
    assert prod.client("sts").get_caller_identity()["Account"] == prod.account_id
    assert list(loader_of(again).search_paths) == paths  # boto3 adds its folder only once
