"""Quotas and input validation AWS applies and moto 5 does not.

AWS behaviour mirrored here:
- An Application Load Balancer forward action takes at most 5 target groups
  (https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-limits.html);
  CreateListener, ModifyListener, CreateRule and ModifyRule fail with ValidationError beyond it.
- Tags (https://docs.aws.amazon.com/tag-editor/latest/userguide/tagging.html): at most 50 per
  resource, keys 1–128 characters, values at most 256, and the `aws:` prefix is reserved. EC2
  answers InvalidParameterValue / TagLimitExceeded, Auto Scaling and ELB ValidationError /
  TooManyTags.
- A security group's description is at most 255 characters
  (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateSecurityGroup.html), and so is
  a rule's; an IPv6 CIDR is accepted only as `Ipv6Ranges` (CidrIpv6), never as `IpRanges`
  (CidrIp), which is IPv4 only.
- Auto Scaling keeps `MinSize ≤ DesiredCapacity ≤ MaxSize` on create, update and
  SetDesiredCapacity, and refuses a request that would break it.
The security group checks and ModifyListener's forward check are steps of the calls that
sandbox.aws.ec2.security_groups and sandbox.aws.elbv2.listeners own.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from sandbox.aws import seams

MAX_FORWARD_TARGET_GROUPS = 5
MAX_TAGS = 50
MAX_KEY, MAX_VALUE, MAX_DESCRIPTION = 128, 256, 255


def apply(state_dir: Path) -> None:
    _forward_actions()
    _ec2_tags()
    _autoscaling()
    _elbv2_tags()


def _wrap(target, name: str, check, signature: str) -> None:
    """Run `check(self, *args, **kwargs)` before moto's `target.name`."""
    def checking(moto):
        def checked(self, *args, **kwargs):
            check(self, *args, **kwargs)
            return moto(self, *args, **kwargs)

        return checked

    seams.wrap(target, name, checking, signature=signature, owner=__name__)


def tag_problem(key: str, value: str | None) -> str | None:
    """Why AWS refuses this tag, or None."""
    if _internal_aws_tag(key):
        return None
    if not key or len(key) > MAX_KEY:
        return f"Tag key must be between 1 and {MAX_KEY} characters long: {key[:40]!r}"
    if key.lower().startswith("aws:"):
        return f"Tag keys starting with 'aws:' are reserved for AWS use: {key!r}"
    if value is not None and len(value) > MAX_VALUE:
        return f"Tag value for key {key!r} exceeds the maximum length of {MAX_VALUE} characters"
    return None


# --- load balancer forward actions -------------------------------------------------------------

def _forward_actions() -> None:
    from moto.elbv2.models import ELBv2Backend

    # CreateListener, CreateRule and ModifyRule validate their actions here; ModifyListener
    # does not validate them at all in moto: sandbox.aws.elbv2.listeners calls check_forward.
    _wrap(ELBv2Backend, "_validate_actions", lambda self, actions: check_forward(actions),
          "(self, actions: list[moto.elbv2.models.FakeAction]) -> None")


def check_forward(actions) -> None:
    from moto.elbv2.exceptions import ValidationError

    for index, action in enumerate(actions, 1):
        data = getattr(action, "data", action)
        if data.get("Type") != "forward":
            continue
        groups = (data.get("ForwardConfig") or {}).get("TargetGroups") or []
        if len(groups) > MAX_FORWARD_TARGET_GROUPS:
            raise ValidationError(
                f"1 validation error detected: Value at 'actions.{index}.member.forwardConfig."
                f"targetGroups' failed to satisfy constraint: Member must have length less "
                f"than or equal to {MAX_FORWARD_TARGET_GROUPS} ({len(groups)} given)")


# --- EC2 tags ---------------------------------------------------------------------------------

def _ec2_tags() -> None:
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.tags import TagBackend

    def check(self, resource_ids, tags, *args, **kwargs) -> None:
        for key, value in (tags or {}).items():
            problem = tag_problem(key, value)
            if problem:
                raise EC2ClientError("InvalidParameterValue", problem)

    _wrap(TagBackend, "create_tags", check,
          "(self, resource_ids: list[str], tags: dict[str, str]) -> bool")


def _internal_aws_tag(key: str) -> bool:
    # AWS itself puts aws:cloudformation:* and aws:autoscaling:* tags on what those services make;
    # moto's CloudFormation and Auto Scaling do the same through create_tags.
    return key.lower().startswith(("aws:cloudformation:", "aws:autoscaling:", "aws:ec2"))


# --- Auto Scaling: tags and sizes -------------------------------------------------------------

def _autoscaling() -> None:
    from moto.autoscaling.models import AutoScalingBackend

    _wrap(AutoScalingBackend, "create_auto_scaling_group", _check_create, CREATE_GROUP)
    _wrap(AutoScalingBackend, "update_auto_scaling_group", _check_update, UPDATE_GROUP)
    _set_desired_request()
    _wrap(AutoScalingBackend, "create_or_update_tags", _check_asg_tags,
          "(self, tags: 'list[dict[str, str]]') -> 'None'")


CREATE_GROUP = (
    "(self, name: 'str', availability_zones: 'list[str]', desired_capacity: 'None | str | int', "
    "max_size: 'None | str | int', min_size: 'None | str | int', launch_config_name: 'str', "
    "launch_template: 'dict[str, Any]', vpc_zone_identifier: 'str | None', default_cooldown: "
    "'int | None', health_check_period: 'None | str | int', health_check_type: 'str | None', "
    "load_balancers: 'list[str]', target_group_arns: 'list[str]', placement_group: "
    "'str | None', termination_policies: 'list[str]', tags: 'list[dict[str, str]]', "
    "capacity_rebalance: 'bool' = False, new_instances_protected_from_scale_in: 'bool' = False, "
    "instance_id: 'str | None' = None, mixed_instances_policy: 'dict[str, Any] | None' = None) "
    "-> 'FakeAutoScalingGroup'")
UPDATE_GROUP = (
    "(self, name: 'str', availability_zones: 'list[str]', desired_capacity: 'int | None', "
    "max_size: 'int | None', min_size: 'int | None', launch_config_name: 'str', "
    "launch_template: 'dict[str, Any]', vpc_zone_identifier: 'str', health_check_period: 'int', "
    "health_check_type: 'str', new_instances_protected_from_scale_in: 'bool | None' = None, "
    "mixed_instances_policy: 'dict[str, Any] | None' = None) -> 'FakeAutoScalingGroup'")


def _asg_error(message: str):
    from moto.autoscaling.exceptions import ValidationError

    return ValidationError(message)


def _as_int(value) -> int | None:
    return None if value in (None, "") else int(value)


def _check_sizes(min_size: int, desired: int | None, max_size: int) -> None:
    if min_size > max_size:
        raise _asg_error(f"Max bound, {max_size}, must be greater than or equal to min bound, "
                         f"{min_size}")
    if desired is not None and not min_size <= desired <= max_size:
        raise _asg_error(f"Desired capacity:{desired} must be between the specified min size:"
                         f"{min_size} and max size:{max_size}")


def _check_create(self, name, availability_zones, desired_capacity, max_size, min_size, *args,
                  **kwargs) -> None:
    tags = kwargs.get("tags") if "tags" in kwargs else (args[11] if len(args) > 11 else None)
    _check_tag_list(tags or [], existing=0)
    _check_sizes(_as_int(min_size) or 0, _as_int(desired_capacity), _as_int(max_size) or 0)


def _check_update(self, name, availability_zones, desired_capacity, max_size, min_size, *args,
                  **kwargs) -> None:
    group = self.autoscaling_groups.get(name)
    if group is None:
        return
    min_size = group.min_size if _as_int(min_size) is None else _as_int(min_size)
    max_size = group.max_size if _as_int(max_size) is None else _as_int(max_size)
    desired = _as_int(desired_capacity)
    if desired is None:  # AWS moves desired into the new bounds when it is not given
        return _check_sizes(min_size, None, max_size)
    _check_sizes(min_size, desired, max_size)


def _set_desired_request() -> None:
    """The SetDesiredCapacity request only: moto's own scale-in on ForceDelete uses the backend."""
    from moto.autoscaling.responses import AutoScalingResponse

    def check(self) -> None:
        _check_set_desired(self.autoscaling_backend, self._get_param("AutoScalingGroupName"),
                           self._get_int_param("DesiredCapacity"))

    _wrap(AutoScalingResponse, "set_desired_capacity", check,
          "(self) -> moto.core.responses.ActionResult")


def _check_set_desired(backend, group_name, desired_capacity) -> None:
    group = backend.autoscaling_groups.get(group_name)
    desired = _as_int(desired_capacity)
    if group is None or desired is None:
        return
    if desired > group.max_size:
        raise _asg_error(f"New SetDesiredCapacity value {desired} is above max value "
                         f"{group.max_size} for the AutoScalingGroup.")
    if desired < group.min_size:
        raise _asg_error(f"New SetDesiredCapacity value {desired} is below min value "
                         f"{group.min_size} for the AutoScalingGroup.")


def _check_asg_tags(self, tags, *args, **kwargs) -> None:
    by_group: dict[str, list[dict]] = {}
    for tag in tags:
        by_group.setdefault(tag["ResourceId"], []).append(tag)
    for name, new in by_group.items():
        group = self.autoscaling_groups.get(name)
        keys = {t["Key"] for t in group.tags} if group else set()
        _check_tag_list(new, existing=len(keys), known=keys)


def _check_tag_list(tags: list[dict], existing: int, known: set[str] = frozenset()) -> None:
    for tag in tags:
        problem = tag_problem(tag.get("Key") or "", tag.get("Value"))
        if problem:
            raise _asg_error(problem)
    added = {t["Key"] for t in tags} - set(known)
    if existing + len(added) > MAX_TAGS:
        raise _asg_error(f"Exceeded the maximum number of tags ({MAX_TAGS}) for an Auto Scaling "
                         f"group: {existing + len(added)}")


# --- ELB tags ---------------------------------------------------------------------------------

def _elbv2_tags() -> None:
    from moto.elbv2.exceptions import ValidationError
    from moto.elbv2.models import ELBv2Backend

    def check(self, resource_arns, tags, *args, **kwargs) -> None:
        for tag in tags or []:
            problem = tag_problem(tag.get("Key") or "", tag.get("Value"))
            if problem:
                raise ValidationError(problem)

    _wrap(ELBv2Backend, "add_tags", check,
          "(self, resource_arns: list[str], tags: list[dict[str, str]]) -> None")


# --- security groups --------------------------------------------------------------------------

def check_security_group(description: str | None) -> None:
    """CreateSecurityGroup's GroupDescription."""
    _check_description("GroupDescription", description)


def check_rules(ip_ranges) -> None:
    """AuthorizeSecurityGroupIngress/Egress's IpRanges."""
    for entry in ip_ranges or []:
        if not isinstance(entry, dict):
            continue
        _check_ipv4("CidrIp", entry.get("CidrIp"))
        _check_description("Description", entry.get("Description"))


def _check_description(field: str, text: str | None) -> None:
    from moto.ec2.exceptions import EC2ClientError

    if text is not None and len(text) > MAX_DESCRIPTION:
        raise EC2ClientError("InvalidParameterValue",
                             f"Value ({text[:40]}…) for parameter {field} is invalid. Length "
                             f"exceeds maximum of {MAX_DESCRIPTION}.")


def _check_ipv4(field: str, cidr: str | None) -> None:
    from moto.ec2.exceptions import EC2ClientError

    if not cidr:
        return
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return  # moto already refuses a malformed CIDR
    if network.version != 4:
        raise EC2ClientError("InvalidParameterValue",
                             f"CIDR block {cidr} is malformed: {field} takes IPv4 only; give an "
                             f"IPv6 range as Ipv6Ranges (CidrIpv6)")
