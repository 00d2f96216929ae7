"""Where a cluster runs: the deploy account's session and its environment stack's outputs."""

from __future__ import annotations

from dataclasses import dataclass, field

from cloud import stacks
from cloud.aws import Aws
from cloud.errors import KilnError

REQUIRED_OUTPUTS = ("VpcId", "SubnetIds", "InstanceSecurityGroupId", "InstanceProfileArn",
                    "InstancePort")
LISTENER_OUTPUT = "ListenerArn"  # required unless the cluster has no load balancer


def cluster_name(app: str, stack: str | None) -> str:
    return f"{app}-{stack}" if stack else app


def stack_part(cluster: str) -> str:
    """The bootstrap stack of a cluster's environment: kiln-env-<cluster>."""
    return f"env-{cluster}"


@dataclass
class Environment:
    """The deploy account session plus what the environment stack provides."""

    aws: Aws
    region: str
    app: str
    cluster: str
    stack_name: str
    vpc_id: str
    subnet_ids: list[str]
    security_group_id: str
    listener_arn: str | None  # None: a cluster without a load balancer (a worker)
    instance_profile_arn: str
    instance_port: int
    lock_table: str | None
    alarm_names: list[str] = field(default_factory=list)
    load_balancer_dns: str | None = None

    @property
    def balanced(self) -> bool:
        """Whether the cluster is behind a load balancer (a worker is not)."""
        return self.listener_arn is not None

    def client(self, service: str):
        return self.aws.client(service, self.region)

    @property
    def settings(self):
        return self.aws.settings

    @property
    def where(self) -> str:
        return f"account {self.aws.account_name} ({self.aws.account_id}), region {self.region}"


def deploy_session(aws: Aws) -> tuple[Aws, str]:
    """The session in the deploy account (kiln.deploy.account) and the deploy region."""
    deploy = aws.settings.deploy
    return aws.account(deploy.account), deploy.region or aws.settings.aws.region


def load(aws: Aws, app: str | None = None, stack: str | None = None,
         env_cluster: str | None = None) -> Environment:
    """The environment of cluster app[-stack] (or of `env_cluster`, whose stack it shares)."""
    settings = aws.settings
    app = app or settings.app
    daws, region = deploy_session(aws)
    cluster = cluster_name(app, stack)
    part = stack_part(env_cluster or cluster)
    values = stacks.outputs(daws, part, region)
    name = stacks.stack_name(settings, part)
    balanced = settings.deploy.load_balancer
    required = REQUIRED_OUTPUTS + ((LISTENER_OUTPUT,) if balanced else ())
    missing = [key for key in required if key not in values]
    if missing:
        raise KilnError(f"stack {name} in account {daws.account_name} has no output "
                        f"{', '.join(missing)}: run `invoke bootstrap` to update it")
    stack_alarms = [a for a in values.get("AlarmNames", "").split(",") if a]
    return Environment(
        aws=daws, region=region, app=app, cluster=cluster, stack_name=name,
        vpc_id=values["VpcId"], subnet_ids=values["SubnetIds"].split(","),
        security_group_id=values["InstanceSecurityGroupId"],
        listener_arn=values[LISTENER_OUTPUT] if balanced else None,
        instance_profile_arn=values["InstanceProfileArn"],
        instance_port=int(values["InstancePort"]),
        lock_table=settings.deploy.lock.table or values.get("LockTableName"),
        alarm_names=stack_alarms + [a for a in settings.deploy.alarms if a not in stack_alarms],
        load_balancer_dns=values.get("LoadBalancerDnsName"))
