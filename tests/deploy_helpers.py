"""What the deploy tests share: the app environment stack in the prod account, baked images
there, and a sampler that watches the cluster from outside while an operation runs.

The environment stack is created by CloudFormation from cloud/templates/env.yaml, the way
`invoke bootstrap` creates it; images come from RunInstances + CreateImage in the prod account,
tagged like promoted images (kiln:app, kiln:version, kiln:role image).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import boto3
import pytest

from accounts import bootstrap
from cloud import apps
from cloud import tags as kiln_tags
from cloud.stacks import stack_name
from cloud.target import connect
from orchestrator import stack as env_stacks
from sandbox import listener_cert

TEMPLATE = Path(__file__).resolve().parent.parent / "cloud" / "templates" / "env.yaml"

# Fast settings for tests: no watch unless a test asks, short health timeouts.
FAST = {"deploy": {"watch": "0", "health_timeout": "4s",
                   "health_check": {"path": "/health", "grace_period": 0}}}
# For a canary nothing sends requests to: it has no verdict once its watch ends, and waits
# kiln.deploy.canary.judge.max_wait more for evidence (10 s, kiln.sandbox.watch) before failing;
# a second of that shows the same failure.
NO_TRAFFIC = {"deploy": {"canary": {"judge": {"max_wait": "1s"}}}}


@pytest.fixture
def deploy_overrides() -> dict:
    """Settings a deploy test module wants on top of the defaults; modules override it."""
    return FAST


@pytest.fixture
def kaws(clean_sandbox, kiln_settings, deploy_overrides):
    """A session in the build account, where Kiln's tasks start (as the operator), after
    `invoke bootstrap` made prod's deployer role."""
    settings = kiln_settings(**deploy_overrides)
    admin = connect(settings, admin=True)
    bootstrap.run(admin.settings, admin, yes=True, parts=("prod",))
    return connect(settings)


@pytest.fixture
def daws(kaws):
    """A session in the deploy account (prod), where the clusters live."""
    return kaws.account("prod")


@pytest.fixture
def outputs(daws):
    """The app environment stack's outputs, deployed into the deploy account."""
    return env_stack(daws)


def deployer(settings):
    """The operator's session in prod through the deployer role, after `invoke bootstrap` of
    prod's account stack (as the administrator)."""
    admin = connect(settings, admin=True)
    bootstrap.run(admin.settings, admin, yes=True, parts=("prod",))
    return connect(settings).account("prod")


def admin_of(daws):
    """The administrator's session in the deploy account, for setting up what `invoke
    bootstrap` or a promotion would have made there (the deployer role may not)."""
    if not hasattr(daws, "_admin"):
        daws._admin = connect(daws.settings, admin=True).admin(daws.account_name)
    return daws._admin


def env_stack(daws, app: str = "hello-web", cluster: str | None = None) -> dict[str, str]:
    """The environment stack with the parameters `invoke bootstrap` gives it (the sandbox's
    listener certificate included)."""
    admin = admin_of(daws)
    cfn = admin.client("cloudformation", daws.region)
    name = stack_name(daws.settings, f"env-{cluster or app}")
    place = bootstrap.Place(daws.settings, daws.account_name, admin, admin, daws.region)
    settings = apps.for_app(daws.settings, app)
    settings.deploy.listener["certificate"] = listener_cert.import_into(
        admin.client("acm", daws.region), daws.settings.sandbox.state_dir)
    values = env_stacks.cluster_parameters(place, settings, cluster or app)
    cfn.create_stack(StackName=name, TemplateBody=TEMPLATE.read_text(),
                     Parameters=[{"ParameterKey": k, "ParameterValue": v}
                                 for k, v in values.items()],
                     Capabilities=["CAPABILITY_NAMED_IAM"])
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def register_image(ec2, name: str) -> str:
    return ec2.register_image(
        Name=name, RootDeviceName="/dev/xvda", Architecture="x86_64", VirtualizationType="hvm",
        EnaSupport=True,
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}])["ImageId"]


def make_image(daws, version: str, app: str = "hello-web", release: str | None = None) -> str:
    """An available image in the deploy account, tagged like a promoted one (RegisterImage is
    the quick way; moto ignores its TagSpecifications, so the tags follow at once)."""
    ec2 = admin_of(daws).client("ec2", daws.region)
    image = register_image(ec2, f"{app}-{version}-{release or 1}-x86_64")
    extra = {kiln_tags.RELEASE: release} if release else {}
    tags = kiln_tags.kiln_tags(app, "image", run_id="20250101T000000-abcdef", version=version,
                               **extra)
    ec2.create_tags(Resources=[image], Tags=kiln_tags.to_list(tags))
    return image


def asg_instances(daws, group: str) -> list[str]:
    asg = daws.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
    return [i["InstanceId"] for i in asg["Instances"]]


def make_unhealthy(daws, group: str) -> None:
    """Every instance of the group fails its health check (sandbox/aws/elbv2/target_health.py)."""
    autoscaling = daws.client("autoscaling")
    for instance in asg_instances(daws, group):
        autoscaling.set_instance_health(InstanceId=instance, HealthStatus="Unhealthy")


class Sampler(threading.Thread):
    """Reads the cluster from outside (its own boto3 session) as fast as the sandbox answers.

    Each sample: for every target group on the listener, its weight, the desired capacity of its
    Auto Scaling group, and how many of its instances are InService and healthy.
    """

    def __init__(self, region: str, listener_arn: str, credentials: dict):
        super().__init__(daemon=True)
        session = boto3.Session(region_name=region, **credentials)
        self.elbv2 = session.client("elbv2")
        self.autoscaling = session.client("autoscaling")
        self.listener_arn = listener_arn
        self.samples: list[dict] = []
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.samples.append(self.sample())
            except Exception as error:  # a group deleted between two calls, say
                self.errors.append(str(error))
            self._halt.wait(0.05)

    def stop(self) -> list[dict]:
        self._halt.set()
        self.join(10)
        return self.samples

    def sample(self) -> dict:
        listener = self.elbv2.describe_listeners(ListenerArns=[self.listener_arn])["Listeners"][0]
        action = listener["DefaultActions"][0]
        weights = {tg["TargetGroupArn"]: tg["Weight"]
                   for tg in action.get("ForwardConfig", {}).get("TargetGroups", [])}
        by_tg = {}
        for asg in self.autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]:
            for arn in asg.get("TargetGroupARNs", []):
                by_tg[arn] = asg
        groups = {}
        for arn, weight in weights.items():
            asg = by_tg.get(arn)
            health = self.elbv2.describe_target_health(TargetGroupArn=arn)
            healthy = {d["Target"]["Id"] for d in health["TargetHealthDescriptions"]
                       if d["TargetHealth"]["State"] == "healthy"}
            in_service = {i["InstanceId"] for i in (asg or {}).get("Instances", [])
                          if i["LifecycleState"] == "InService"
                          and i["HealthStatus"] == "Healthy"}
            groups[(asg or {}).get("AutoScalingGroupName", arn)] = {
                "weight": weight, "desired": (asg or {}).get("DesiredCapacity", 0),
                "healthy": len(healthy & in_service)}
        return {"at": time.monotonic(), "groups": groups}


def serving_capacity(sample: dict) -> int:
    return sum(g["healthy"] for g in sample["groups"].values() if g["weight"] > 0)


def unhealthy_serving(sample: dict) -> list[str]:
    """Groups with traffic but not one healthy instance."""
    return [name for name, g in sample["groups"].items() if g["weight"] > 0 and g["healthy"] == 0]


def credentials(daws) -> dict:
    frozen = daws.session.get_credentials().get_frozen_credentials()
    return {"aws_access_key_id": frozen.access_key, "aws_secret_access_key": frozen.secret_key,
            "aws_session_token": frozen.token}
