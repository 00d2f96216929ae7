"""Stacks in accounts (and regions) of their own: `stacks: [{name: staging, deploy: {account:
staging}}]` gives cluster <app>-staging its own environment stack in the staging account, its
images are promoted there, and status labels it with that account."""

import pytest

from accounts import bootstrap as kiln_bootstrap
from cloud import apps, stacks
from cloud import tags as kiln_tags
from cloud.errors import ConfigError
from cloud.target import connect
from orchestrator import operations
from orchestrator import stack as env_stacks
from provisioner import promote, record, share
from sandbox import listener_cert
from tests import image_helpers
from tests.conftest import deep_merge
from tests.deploy_helpers import FAST

STAGING = {"id": "333333333333", "role": "kiln-deployer",
           "external_id": "kiln-sandbox-external-id",
           "admin_role": "OrganizationAccountAccessRole"}


def staging_settings(kiln_settings, **deploy):
    return kiln_settings(**deep_merge(FAST, {
        "sandbox": {"accounts": {"staging": STAGING}},
        "apps": {"hello-web": {"stacks": [
            "canary", {"name": "staging", "deploy": {"account": "staging", **deploy}}]}}}))


def test_a_stack_names_its_own_deploy_settings_checked_at_load(kiln_settings):
    settings = staging_settings(kiln_settings, capacity={"desired": 1})
    assert apps.clusters(settings) == [("hello-web", None), ("hello-web", "canary"),
                                       ("hello-web", "staging")]
    staging = apps.for_app(settings, "hello-web", "staging").deploy
    assert (staging.account, staging.capacity.desired, staging.capacity.max) == ("staging", 1, 4)
    assert apps.for_app(settings, "hello-web", "canary").deploy.account == "prod"
    with pytest.raises(ConfigError, match=r"kiln.apps.hello-web.stacks\[staging\].deploy."
                                          r"account: 'qa' is not an account in kiln.accounts"):
        staging_settings(kiln_settings, account="qa")
    with pytest.raises(ConfigError, match=r"stacks\[staging\].deploy.capacity.desire: unknown "
                                          r"key \(did you mean 'desired'\?\)"):
        staging_settings(kiln_settings, capacity={"desire": 1})
    with pytest.raises(ConfigError, match=r"stacks\[staging\].deploy.region: eu-west-1 is "
                                          r"neither kiln.aws.region nor in kiln.bake.copy_regions"):
        staging_settings(kiln_settings, region="eu-west-1")
    with pytest.raises(ConfigError, match=r"stacks\[1\]: expected a stack name or a mapping"):
        kiln_settings(apps={"hello-web": {"stacks": ["canary", {"deploy": {}}]}})


def test_a_staging_stack_runs_in_its_own_account_with_its_own_environment_and_promotion(
        clean_sandbox, kiln_settings):
    settings = staging_settings(kiln_settings)
    build = connect(settings, admin=True)
    # The sandbox names its listener certificate for prod only; staging's is staging's own, as
    # on AWS (kiln.apps.<app>.stacks[…].deploy.listener.certificate).
    certificate = listener_cert.import_into(build.admin("staging").client("acm"),
                                            settings.sandbox.state_dir)
    settings = staging_settings(kiln_settings, listener={"certificate": certificate})
    assert "env-hello-web-staging" in env_stacks.register_clusters(settings)
    kiln_bootstrap.run(settings, connect(settings, admin=True), yes=True,
                       parts=("build", "prod", "env-hello-web-staging"))

    # A baked image, shared with staging and promoted there (`invoke ami.promote --to staging`).
    aws = connect(apps.for_app(settings, "hello-web", "staging"))
    image = image_helpers.make_image(aws.client("ec2"), stacks.ami_key(aws), version="1.0.0")
    record.write(aws.settings, "hello-web", "1.0.0", {"image_id": image,
                                                      "images": {aws.region: image}})
    share.share_image(aws, image, aws.region, ["staging"])
    promoted = promote.promote(aws, "hello-web", "1.0.0", "staging")["promotions"][0]

    staging = aws.account("staging")
    assert staging.account_id == "333333333333"
    copy = staging.client("ec2").describe_images(ImageIds=[promoted["image_id"]])["Images"][0]
    assert kiln_tags.from_list(copy["Tags"])[promote.PROMOTED_FROM] == image
    assert stacks.outputs(staging, "env-hello-web-staging")["ListenerArn"]
    assert operations.deploy(aws, version="1.0.0", stack="staging")["result"] == "ok"
    in_staging = staging.client("autoscaling").describe_auto_scaling_groups()[
        "AutoScalingGroups"]
    assert [g["AutoScalingGroupName"] for g in in_staging] == ["hello-web-staging-v001"]
    prod = aws.account("prod").client("autoscaling").describe_auto_scaling_groups()
    assert prod["AutoScalingGroups"] == []

    found = operations.status_all(connect(settings), app="hello-web", stack="staging")
    entry = found["clusters"][0]
    assert (entry["cluster"], entry["account"]) == ("hello-web-staging", "staging")
    assert operations.status_lines(entry)[0].startswith(
        "cluster hello-web-staging (staging, us-east-1) at https://")


def test_the_sandbox_names_a_listener_certificate_in_every_deploy_account(
        clean_sandbox, kiln_settings):
    """Each deploy account (and region) the config names gets the sandbox's certificate, in
    ACM there, unless its own is set: a stack's, an app's, the default one."""
    settings = kiln_settings(**deep_merge(FAST, {
        "sandbox": {"accounts": {"staging": STAGING}},
        "apps": {"hello-web": {"stacks": ["canary", {"name": "staging",
                                                     "deploy": {"account": "staging"}}]},
                 "worker": {"deploy": {"account": "staging"}}}}))
    connect(settings)  # the sandbox's overlay names the certificates

    def certificate(app, stack=None):
        return apps.for_app(settings, app, stack).deploy.listener.certificate

    assert ":222222222222:certificate/" in certificate("hello-web")
    assert ":333333333333:certificate/" in certificate("hello-web", "staging")
    assert ":333333333333:certificate/" in certificate("worker")
    assert certificate("hello-web", "canary") == certificate("hello-web")
    staging = connect(settings, admin=True).admin("staging").client("acm")
    listed = staging.list_certificates()["CertificateSummaryList"]
    assert [c["CertificateArn"] for c in listed] == [certificate("worker")]
    # Bootstrap of the staging stack's environment takes it as it is (no certificate by hand).
    # The environments registered here (the worker's in staging) leave with the test.
    registered = list(kiln_bootstrap.STACKS)
    try:
        assert "env-hello-web-staging" in env_stacks.register_clusters(settings)
        kiln_bootstrap.run(settings, connect(settings, admin=True), yes=True,
                           parts=("prod", "env-hello-web-staging"))
    finally:
        kiln_bootstrap.STACKS[:] = registered
    assert stacks.outputs(connect(settings).account("staging"),
                          "env-hello-web-staging")["ListenerArn"]
