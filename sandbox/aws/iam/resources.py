"""The resources an EC2, Auto Scaling, ELB or CloudWatch request acts on, with their tags, the
tags it asks for (aws:RequestTag, aws:TagKeys), and the tagging it needs authorized besides.

Written from AWS's Service Authorization Reference: each action is checked against every
resource it names (RunInstances against the instance, volume and interface it makes and the
image, subnet, security groups, key pair and launch template it uses), each resource with its own
tags (aws:ResourceTag). A resource that exists has the tags the sandbox holds for it; one the
request makes has none the sandbox can know (`tags` None: a condition on its aws:ResourceTag
fails closed). An action that takes no resource (Describe*) is evaluated against "*".

Tagging on create is authorized as AWS does: an EC2 create with TagSpecifications needs
ec2:CreateTags on each tagged new resource with ec2:CreateAction; an Auto Scaling group created
with tags needs autoscaling:CreateOrUpdateTags, and an ELB resource created with tags
elasticloadbalancing:AddTags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    arn: str
    tags: dict | None  # None: tags the sandbox cannot know (a resource the request makes)


NO_RESOURCE = [Target("*", {})]


def targets(action: str, params: dict, account: str, region: str) -> list[Target] | None:
    """The resources of the request; None when the sandbox does not place this action."""
    service, _, name = action.partition(":")
    place = _PLACERS.get(service)
    return place(name, params, account, region) if place else None


# -- request tags -------------------------------------------------------------------------------


def request_tags(service: str, params: dict) -> dict | None:
    """The tags the request asks for, by key ({} when it names none); None when it carries tags
    in a form the sandbox does not read."""
    found: dict = {}
    for key, value in params.items():
        match = re.fullmatch(r"(TagSpecification\.\d+\.Tag|Tags(?:\.member)?|Tag)\.(\d+)\.Key",
                             key)
        if match:
            found[value] = params.get(f"{match.group(1)}.{match.group(2)}.Value", "")
    tags = params.get("Tags")
    if isinstance(tags, list):
        for tag in tags:
            if isinstance(tag, dict):
                found[tag.get("Key", tag.get("TagKey"))] = tag.get("Value", tag.get("TagValue"))
    elif isinstance(tags, dict):
        found.update(tags)
    unread = [k for k in params if "Tag" in k and not _is_tag_field(k)]
    return None if unread and not found else found


def _is_tag_field(key: str) -> bool:
    return bool(re.fullmatch(
        r"(TagSpecification\.\d+\.(Tag\.\d+\.(Key|Value)|ResourceType)"
        r"|Tags(\.member)?\.\d+\.(Key|Value|ResourceId|ResourceType|PropagateAtLaunch)"
        r"|Tag\.\d+\.(Key|Value)|Tags|TagKeys(\.member\.\d+)?|TagKey\.\d+)", key))


def tag_context(tags: dict) -> dict:
    """aws:RequestTag/<key> and aws:TagKeys, as AWS puts them in the request context."""
    context = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    if tags:
        context["aws:TagKeys"] = list(tags)
    return context


def spec_tags(params: dict) -> dict[str, dict]:
    """EC2's TagSpecifications: the tags asked for each resource type."""
    found: dict[str, dict] = {}
    for key, kind in params.items():
        match = re.fullmatch(r"TagSpecification\.(\d+)\.ResourceType", key)
        if not match:
            continue
        n = match.group(1)
        tags = found.setdefault(kind, {})
        for field, value in params.items():
            tag = re.fullmatch(rf"TagSpecification\.{n}\.Tag\.(\d+)\.Key", field)
            if tag:
                tags[value] = params.get(f"TagSpecification.{n}.Tag.{tag.group(1)}.Value", "")
    return found


def tag_on_create(action: str, params: dict, account: str,
                  region: str) -> list[tuple[str, str, dict]]:
    """(action, ARN, extra context) of each tagging a create with tags needs authorized too."""
    service, _, name = action.partition(":")
    if service == "ec2":
        return [("ec2:CreateTags", _ec2_arn(kind, "*", account, region),
                 {"ec2:CreateAction": name, **tag_context(tags)})
                for kind, tags in spec_tags(params).items() if tags]
    tags = request_tags(service, params) or {}
    if not tags:
        return []
    if action == "autoscaling:CreateAutoScalingGroup":
        arn = _group_arn(params.get("AutoScalingGroupName", ""), account, region)
        return [("autoscaling:CreateOrUpdateTags", arn, tag_context(tags))]
    if service == "elasticloadbalancing" and name.startswith("Create"):
        return [("elasticloadbalancing:AddTags", t.arn, tag_context(tags))
                for t in targets(action, params, account, region) or []]
    return []


# -- EC2 ----------------------------------------------------------------------------------------

# An EC2 id's prefix -> its resource type in ARNs.
_EC2_KINDS = {"ami": "image", "snap": "snapshot", "i": "instance", "sg": "security-group",
              "vol": "volume", "lt": "launch-template", "subnet": "subnet", "vpc": "vpc",
              "eni": "network-interface", "key": "key-pair", "igw": "internet-gateway",
              "rtb": "route-table", "eipalloc": "elastic-ip", "nat": "natgateway",
              "vpce": "vpc-endpoint"}

# Actions on existing resources named by id, and the parameter naming them.
_EC2_BY_ID = {
    "DeregisterImage": "ImageId", "EnableImageDeprecation": "ImageId",
    "DisableImageDeprecation": "ImageId", "ModifyImageAttribute": "ImageId",
    "ResetImageAttribute": "ImageId", "DeleteSnapshot": "SnapshotId",
    "ModifySnapshotAttribute": "SnapshotId", "TerminateInstances": "InstanceId",
    "StopInstances": "InstanceId", "StartInstances": "InstanceId",
    "RebootInstances": "InstanceId", "GetConsoleOutput": "InstanceId",
    "ModifyInstanceAttribute": "InstanceId", "DeleteSecurityGroup": "GroupId",
    "AuthorizeSecurityGroupIngress": "GroupId", "AuthorizeSecurityGroupEgress": "GroupId",
    "RevokeSecurityGroupIngress": "GroupId", "RevokeSecurityGroupEgress": "GroupId",
    "DeleteVolume": "VolumeId", "CreateTags": "ResourceId", "DeleteTags": "ResourceId",
    "DeleteSubnet": "SubnetId", "DeleteVpc": "VpcId", "ModifySubnetAttribute": "SubnetId",
    "ModifyVpcAttribute": "VpcId",
}

_TEMPLATE_ACTIONS = ("CreateLaunchTemplateVersion", "ModifyLaunchTemplate",
                     "DeleteLaunchTemplate", "DeleteLaunchTemplateVersions")


def _ec2_arn(kind: str, resource_id: str, account: str, region: str) -> str:
    owner = "" if kind == "image" else account  # images' ARNs name no account
    return f"arn:aws:ec2:{region}:{owner}:{kind}/{resource_id}"


def _ec2_backend(account: str, region: str):
    from moto.ec2.models import ec2_backends

    return ec2_backends[account][region]


def _existing(resource_id: str, account: str, region: str, kind: str | None = None) -> Target:
    kind = kind or _EC2_KINDS.get(resource_id.partition("-")[0], "resource")
    tags = dict(_ec2_backend(account, region).tags.get(resource_id, {}))
    return Target(_ec2_arn(kind, resource_id, account, region), tags)


def _ids(params: dict, field: str) -> list[str]:
    return [v for k, v in sorted(params.items())
            if k == field or re.fullmatch(rf"{field}\.\d+", k)]


def _ec2(name: str, params: dict, account: str, region: str) -> list[Target] | None:
    if name.startswith("Describe") or name in ("GetEbsEncryptionByDefault",
                                               "GetEbsDefaultKmsKeyId"):
        return NO_RESOURCE
    if name in _EC2_BY_ID:
        return [_existing(i, account, region) for i in _ids(params, _EC2_BY_ID[name])]
    if name in _TEMPLATE_ACTIONS:
        template = _template_id(params, "", account, region)
        return [_existing(template, account, region, "launch-template")] if template else None
    if name == "DeleteKeyPair":
        return [_key_pair(params.get("KeyName"), params.get("KeyPairId"), account, region)]
    new = _EC2_NEW.get(name)
    if new is not None:
        return new(params, account, region)
    return None


def _new(kind: str, account: str, region: str) -> Target:
    return Target(_ec2_arn(kind, "*", account, region), None)


def _run_instances(params: dict, account: str, region: str) -> list[Target]:
    found = [_new(k, account, region) for k in ("instance", "volume", "network-interface")]
    template = _template_id(params, "LaunchTemplate.", account, region)
    data = _template_data(template, params.get("LaunchTemplate.Version"), account, region)
    image = params.get("ImageId") or data.get("ImageId")
    if image:
        found.append(_existing(image, account, region, "image"))
    if template:
        found.append(_existing(template, account, region, "launch-template"))
    groups = _ids(params, "SecurityGroupId") + [
        v for k, v in params.items()
        if re.fullmatch(r"NetworkInterface\.\d+\.SecurityGroupId\.\d+", k)]
    groups += data.get("SecurityGroupIds") or []
    for interface in data.get("NetworkInterfaces") or []:
        groups += interface.get("Groups") or []
    found += [_existing(g, account, region, "security-group") for g in dict.fromkeys(groups)]
    subnet = params.get("SubnetId") or params.get("NetworkInterface.1.SubnetId") or next(
        (i.get("SubnetId") for i in data.get("NetworkInterfaces") or [] if i.get("SubnetId")),
        None)
    if subnet:
        found.append(_existing(subnet, account, region, "subnet"))
    key_name = params.get("KeyName") or data.get("KeyName")
    if key_name:
        found.append(_key_pair(key_name, None, account, region))
    return found


def _template_id(params: dict, prefix: str, account: str, region: str) -> str | None:
    template_id = params.get(f"{prefix}LaunchTemplateId")
    name = params.get(f"{prefix}LaunchTemplateName")
    if template_id or not name:
        return template_id
    try:
        return _ec2_backend(account, region).get_launch_template_by_name(name).id
    except Exception:  # noqa: BLE001 - an unknown template is EC2's own error
        return None


def _template_data(template_id: str | None, version: str | None, account: str,
                   region: str) -> dict:
    if not template_id:
        return {}
    try:
        template = _ec2_backend(account, region).get_launch_template(template_id)
        return template.get_version(version or "$Default").data or {}
    except Exception:  # noqa: BLE001 - EC2 answers an unknown template or version itself
        return {}


def _key_pair(name: str | None, key_id: str | None, account: str, region: str) -> Target:
    pairs = _ec2_backend(account, region).key_pairs
    pair = pairs.get(name) if name else next(
        (p for p in pairs.values() if p.id == key_id), None)
    tags = dict(_ec2_backend(account, region).tags.get(pair.id, {})) if pair else {}
    return Target(_ec2_arn("key-pair", name or key_id or "*", account, region), tags)


def _create_image(params: dict, account: str, region: str) -> list[Target]:
    return [_existing(params.get("InstanceId", ""), account, region, "instance"),
            _new("image", account, region), _new("snapshot", account, region)]


def _copy_image(params: dict, account: str, region: str) -> list[Target]:
    source = params.get("SourceImageId", "")
    source_region = params.get("SourceRegion") or region
    return [Target(f"arn:aws:ec2:{source_region}::image/{source}", None),
            _new("image", account, region)]


def _create_security_group(params: dict, account: str, region: str) -> list[Target]:
    found = [_new("security-group", account, region)]
    if params.get("VpcId"):
        found.append(_existing(params["VpcId"], account, region, "vpc"))
    return found


_EC2_NEW = {
    "RunInstances": _run_instances,
    "CreateImage": _create_image,
    "CopyImage": _copy_image,
    "CreateSecurityGroup": _create_security_group,
    "CreateLaunchTemplate": lambda p, a, r: [_new("launch-template", a, r)],
    "CreateKeyPair": lambda p, a, r: [_new("key-pair", a, r)],
    "ImportKeyPair": lambda p, a, r: [_new("key-pair", a, r)],
    "CreateVolume": lambda p, a, r: [_new("volume", a, r)],
}


def launches(action: str, params: dict, account: str, region: str) -> list[Target]:
    """What a group's launch template launches, for the caller creating or updating the group:
    Auto Scaling checks that the caller may launch from it (ec2:RunInstances on the template,
    image, subnet, security groups and the instance, volumes and interfaces it makes)."""
    if action not in ("autoscaling:CreateAutoScalingGroup", "autoscaling:UpdateAutoScalingGroup"):
        return []
    template = _template_id(params, "LaunchTemplate.", account, region)
    if not template:
        return []
    run = {"LaunchTemplate.LaunchTemplateId": template,
           "LaunchTemplate.Version": params.get("LaunchTemplate.Version")}
    subnet = (params.get("VPCZoneIdentifier") or "").split(",")[0].strip()
    if subnet:
        run["SubnetId"] = subnet
    return _run_instances(run, account, region)


# -- Auto Scaling -------------------------------------------------------------------------------

_GROUP_FIELDS = ("AutoScalingGroupName",)


def _group_arn(name: str, account: str, region: str) -> str:
    return f"arn:aws:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/{name}"


def _group(name: str, account: str, region: str) -> Target:
    from moto.autoscaling.models import autoscaling_backends

    group = autoscaling_backends[account][region].autoscaling_groups.get(name)
    if group is None:
        return Target(_group_arn(name, account, region), None)
    return Target(group.arn, {t["Key"]: t.get("Value", "") for t in group.tags})


def _group_of_instance(instance_id: str | None, account: str, region: str) -> str | None:
    """SetInstanceHealth and TerminateInstanceInAutoScalingGroup act on the instance's group."""
    from moto.autoscaling.models import autoscaling_backends

    if not instance_id:
        return None
    for group in autoscaling_backends[account][region].autoscaling_groups.values():
        if any(state.instance.id == instance_id for state in group.instance_states):
            return group.name
    return None


def _autoscaling(name: str, params: dict, account: str, region: str) -> list[Target] | None:
    if name.startswith("Describe"):
        return NO_RESOURCE
    if name in ("CreateOrUpdateTags", "DeleteTags"):
        names = [v for k, v in params.items() if re.fullmatch(r"Tags\.member\.\d+\.ResourceId", k)]
        return [_group(n, account, region) for n in dict.fromkeys(names)]
    group = params.get("AutoScalingGroupName") or _group_of_instance(
        params.get("InstanceId"), account, region)
    if not group:
        return None
    if name == "CreateAutoScalingGroup":
        return [Target(_group_arn(group, account, region), None)]
    return [_group(group, account, region)]


# -- Elastic Load Balancing ---------------------------------------------------------------------


def _elb_tags(arn: str, account: str, region: str) -> dict:
    from moto.elbv2.models import elbv2_backends

    return dict(elbv2_backends[account][region].tagging_service.get_tag_dict_for_resource(arn))


def _elb_existing(arn: str, account: str, region: str) -> Target:
    return Target(arn, _elb_tags(arn, account, region))


def _elb_arn(rest: str, account: str, region: str) -> str:
    return f"arn:aws:elasticloadbalancing:{region}:{account}:{rest}"


def _elb_listener_of(balancer_arn: str) -> str:
    return balancer_arn.replace(":loadbalancer/", ":listener/", 1) + "/*"


def _member_values(params: dict, field: str) -> list[str]:
    return [v for k, v in sorted(params.items()) if re.fullmatch(rf"{field}\.member\.\d+", k)]


def _elb(name: str, params: dict, account: str, region: str) -> list[Target] | None:
    if name.startswith("Describe"):
        return NO_RESOURCE
    if name == "CreateTargetGroup":
        return [Target(_elb_arn(f"targetgroup/{params.get('Name', '')}/*", account, region),
                       None)]
    if name == "CreateLoadBalancer":
        kind = "net" if params.get("Type") == "network" else "app"
        return [Target(_elb_arn(f"loadbalancer/{kind}/{params.get('Name', '')}/*", account,
                                region), None)]
    if name == "CreateListener":
        return [Target(_elb_listener_of(params.get("LoadBalancerArn", "")), None)]
    if name in ("AddTags", "RemoveTags"):
        return [_elb_existing(a, account, region) for a in _member_values(params, "ResourceArns")]
    if name == "SetRulePriorities":
        arns = [v for k, v in params.items()
                if re.fullmatch(r"RulePriorities\.member\.\d+\.RuleArn", k)]
        return [_elb_existing(a, account, region) for a in arns]
    for field in ("RuleArn", "ListenerArn", "TargetGroupArn", "LoadBalancerArn"):
        if params.get(field):
            return [_elb_existing(params[field], account, region)]
    return None


# -- CloudWatch ---------------------------------------------------------------------------------


def _cloudwatch(name: str, params: dict, account: str, region: str) -> list[Target] | None:
    names = [params.get("AlarmName")] if params.get("AlarmName") else []
    names += _member_values(params, "AlarmNames")
    names += [n for n in params.get("AlarmNames", []) if isinstance(n, str)] \
        if isinstance(params.get("AlarmNames"), list) else []
    if names:
        return [Target(f"arn:aws:cloudwatch:{region}:{account}:alarm:{n}", None)
                for n in dict.fromkeys(names)]
    if name in ("GetMetricData", "GetMetricStatistics", "ListMetrics", "PutMetricData",
                "DescribeAlarms", "DescribeAlarmHistory", "DescribeAlarmsForMetric"):
        return NO_RESOURCE
    return None


_PLACERS = {"ec2": _ec2, "autoscaling": _autoscaling, "elasticloadbalancing": _elb,
            "cloudwatch": _cloudwatch}
