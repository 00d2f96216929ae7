"""The cluster as AWS holds it: server groups found by tag, weights read from the listener.

History lives in two tags of each server group (Auto Scaling group, launch template, target group):
- `kiln:replaces`, set at creation: the group that served the cluster when this one was created
  (the group a deploy or canary meant to replace); empty for a cluster's first group. Groups
  made before this tag existed have none, and fall back to the newest older disabled group.
- `kiln:state`, changed as the group's life goes on: creating → canary → active, then how it
  ended: disabled (replaced by a newer group; still a rollback target), rolled-back (a person
  took it out: never served again) or failed (its checks failed: never served again).
A rollback returns to the group the serving one replaced, only if that group is disabled;
teardown never deletes that group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cloud import tags
from orchestrator.environment import Environment

CLUSTER = "kiln:cluster"
SERVER_GROUP = "kiln:server-group"
AMI = "kiln:ami"
STATE = "kiln:state"
REPLACES = "kiln:replaces"
OWNER = "kiln:owner"
ROLE = "server-group"

# The states a server group's kiln:state tag takes.
CREATING, CANARY, ACTIVE, DISABLED, FAILED = "creating", "canary", "active", "disabled", "failed"
ROLLED_BACK = "rolled-back"
ENDED = (DISABLED, ROLLED_BACK, FAILED)  # the states of a group that no longer serves


@dataclass
class ServerGroup:
    name: str
    sequence: int
    version: str
    ami: str
    state: str
    target_group_arn: str | None
    launch_template_id: str | None
    desired: int
    min_size: int
    max_size: int
    in_service: int
    healthy: int
    unhealthy_reasons: list[str]
    weight: int | None  # None: not on the listener at all
    created: datetime
    tags: dict[str, str] = field(default_factory=dict)
    balanced: bool = True  # False: its cluster has no load balancer (a worker)

    @property
    def serving(self) -> bool:
        """Takes traffic; without a load balancer, does the work: active with instances."""
        if not self.balanced:
            return self.state == ACTIVE and self.desired > 0
        return bool(self.weight)

    @property
    def release(self) -> str | None:
        return self.tags.get(tags.RELEASE)

    @property
    def release_id(self) -> str:
        """version-release (2.4.0-2), or the version alone for a group without a release."""
        return f"{self.version}-{self.release}" if self.release else self.version

    @property
    def replaces(self) -> str | None:
        """The group this one was created to replace (None: the first, or not recorded)."""
        return self.tags.get(REPLACES) or None

    @property
    def age(self) -> str:
        seconds = int((datetime.now(UTC) - self.created).total_seconds())
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"{seconds // size}{unit}"
        return f"{seconds}s"

    def as_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "release": self.release,
                "release_id": self.release_id, "ami": self.ami, "state": self.state,
                "replaces": self.replaces, "desired": self.desired,
                "in_service": self.in_service, "healthy": self.healthy,
                "weight": self.weight or 0, "on_listener": self.weight is not None,
                "age": self.age, "created": self.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "target_group": self.target_group_arn,
                "launch_template": self.launch_template_id}


@dataclass
class Cluster:
    env: Environment
    groups: list[ServerGroup]
    listener_weights: dict[str, int]  # target group ARN → weight, as the listener forwards

    @property
    def name(self) -> str:
        return self.env.cluster

    def group(self, name: str) -> ServerGroup | None:
        return next((g for g in self.groups if g.name == name), None)

    def by_target_group(self, arn: str) -> ServerGroup | None:
        return next((g for g in self.groups if g.target_group_arn == arn), None)

    def canary(self) -> ServerGroup | None:
        """The newest group in a canary (created but not yet promoted), if any."""
        live = [g for g in self.groups if g.state in (CREATING, CANARY)]
        return live[-1] if live else None

    def baseline(self) -> ServerGroup | None:
        """The group that serves the cluster: the newest active one (the biggest weight else)."""
        active = [g for g in self.groups if g.state == ACTIVE]
        if active:
            return active[-1]
        serving = [g for g in self.groups if g.serving and g.state not in (CREATING, CANARY)]
        return max(serving, key=lambda g: (g.weight, g.sequence)) if serving else None

    def rollback_target(self, serving: ServerGroup) -> ServerGroup | None:
        """Where a rollback from `serving` returns: the group it replaced, if that is disabled
        (never a rolled-back or failed one). Groups without the tag: the newest older disabled."""
        if REPLACES not in serving.tags:
            older = [g for g in self.groups
                     if g.sequence < serving.sequence and g.state == DISABLED]
            return older[-1] if older else None
        replaced = self.group(serving.replaces) if serving.replaces else None
        return replaced if replaced is not None and replaced.state == DISABLED else None

    def next_name(self) -> str:
        last = max((g.sequence for g in self.groups), default=0)
        return group_name(self.name, last % 999 + 1)

    def as_dict(self) -> dict:
        return {"cluster": self.name, "app": self.env.app, "account": self.env.aws.account_name,
                "region": self.env.region, "listener": self.env.listener_arn,
                "server_groups": [g.as_dict() for g in self.groups]}


def group_name(cluster: str, sequence: int) -> str:
    return f"{cluster}-v{sequence:03d}"


def sequence_of(cluster: str, name: str) -> int | None:
    match = re.fullmatch(re.escape(cluster) + r"-v(\d{3})", name)
    return int(match.group(1)) if match else None


def read(env: Environment) -> Cluster:
    """Everything about the cluster, from the describe calls (AWS is the only state)."""
    weights = listener_weights(env) if env.balanced else {}
    groups = []
    for asg in _auto_scaling_groups(env):
        sequence = sequence_of(env.cluster, asg["AutoScalingGroupName"])
        if sequence is not None:
            groups.append(_server_group(env, asg, sequence, weights))
    groups.sort(key=lambda g: g.sequence)
    return Cluster(env, groups, weights)


def _auto_scaling_groups(env: Environment) -> list[dict]:
    pages = env.client("autoscaling").get_paginator("describe_auto_scaling_groups").paginate(
        Filters=[{"Name": f"tag:{CLUSTER}", "Values": [env.cluster]}])
    return [asg for page in pages for asg in page["AutoScalingGroups"]]


def listener_weights(env: Environment) -> dict[str, int]:
    listener = env.client("elbv2").describe_listeners(
        ListenerArns=[env.listener_arn])["Listeners"][0]
    weights: dict[str, int] = {}
    for action in listener.get("DefaultActions", []):
        if action["Type"] != "forward":
            continue
        config = action.get("ForwardConfig", {}).get("TargetGroups")
        if config:
            weights.update({tg["TargetGroupArn"]: tg.get("Weight", 1) for tg in config})
        elif action.get("TargetGroupArn"):
            weights[action["TargetGroupArn"]] = 1
    return weights


def url(env: Environment) -> str | None:
    """Where the cluster answers: the load balancer's DNS name and the listener's port (None:
    a cluster without one)."""
    if not env.balanced:
        return None
    elbv2 = env.client("elbv2")
    listener = elbv2.describe_listeners(ListenerArns=[env.listener_arn])["Listeners"][0]
    host = env.load_balancer_dns or elbv2.describe_load_balancers(
        LoadBalancerArns=[listener["LoadBalancerArn"]])["LoadBalancers"][0]["DNSName"]
    scheme = "https" if listener["Protocol"] == "HTTPS" else "http"
    default = {"http": 80, "https": 443}[scheme]
    port = "" if listener["Port"] == default else f":{listener['Port']}"
    return f"{scheme}://{host}{port}/"


def _server_group(env: Environment, asg: dict, sequence: int,
                  weights: dict[str, int]) -> ServerGroup:
    found = tags.from_list([{"Key": t["Key"], "Value": t["Value"]} for t in asg.get("Tags", [])])
    target_groups = asg.get("TargetGroupARNs") or []
    tg = target_groups[0] if target_groups else None
    healthy_ids, reasons = healthy_instances(env, asg, tg)
    template = asg.get("LaunchTemplate") or {}
    created = asg["CreatedTime"]
    return ServerGroup(
        name=asg["AutoScalingGroupName"], sequence=sequence,
        version=found.get(tags.VERSION, "?"), ami=found.get(AMI, "?"),
        state=found.get(STATE, "?"), target_group_arn=tg,
        launch_template_id=template.get("LaunchTemplateId"),
        desired=asg["DesiredCapacity"], min_size=asg["MinSize"], max_size=asg["MaxSize"],
        in_service=len(_in_service(asg)), healthy=len(healthy_ids), unhealthy_reasons=reasons,
        weight=weights.get(tg) if tg else None,
        created=created if created.tzinfo else created.replace(tzinfo=UTC), tags=found,
        balanced=env.balanced)


def _in_service(asg: dict) -> set[str]:
    return {i["InstanceId"] for i in asg.get("Instances", [])
            if i["LifecycleState"] == "InService" and i["HealthStatus"] == "Healthy"}


def healthy_instances(env: Environment, asg: dict, target_group_arn: str | None
                      ) -> tuple[set[str], list[str]]:
    """Instances InService in the group and healthy in its target group, and why others aren't.
    A group without a target group (a worker) has Auto Scaling's EC2 health only."""
    in_service = _in_service(asg)
    if not target_group_arn and not env.balanced:
        reasons = [f"{i['InstanceId']} {i['LifecycleState']} ({i['HealthStatus']})"
                   for i in asg.get("Instances", []) if i["InstanceId"] not in in_service]
        return in_service, reasons
    if not target_group_arn or not asg.get("Instances"):
        return set(), []
    health = env.client("elbv2").describe_target_health(
        TargetGroupArn=target_group_arn)["TargetHealthDescriptions"]
    healthy = {d["Target"]["Id"] for d in health if d["TargetHealth"]["State"] == "healthy"}
    reasons = [f"{d['Target']['Id']} {d['TargetHealth']['State']}"
               + (f" ({d['TargetHealth']['Reason']})" if d["TargetHealth"].get("Reason") else "")
               for d in health if d["TargetHealth"]["State"] != "healthy"]
    return in_service & healthy, reasons


def describe_group(env: Environment, name: str) -> dict | None:
    groups = env.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[name])["AutoScalingGroups"]
    return groups[0] if groups else None
