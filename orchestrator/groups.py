"""The AWS calls that change a cluster: server groups, their capacity and tags, the listener."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import shlex
from datetime import UTC, datetime, timedelta

from botocore.exceptions import ClientError
from tenacity import (
    retry,
    retry_if_exception,
    retry_if_result,
    stop_after_delay,
    wait_exponential,
)

from cloud import tags
from cloud import user_data as environment_values
from cloud.console import say
from cloud.errors import KilnError
from orchestrator import cluster as model
from orchestrator.environment import Environment

SCALE_DOWN_ACTION = "kiln-disable-scale-down"
# The launch lifecycle hook of a group whose app has a health command (kiln.deploy.launch_check).
LAUNCH_HOOK = "kiln-launch-health"
MAX_HEARTBEAT = 7200  # AWS's longest heartbeat timeout of a lifecycle hook (seconds)
# How long Auto Scaling may take to know a launch template EC2 just made (seconds).
TEMPLATE_PROPAGATION = 120


def target_group_name(group: str) -> str:
    """Target group names are at most 32 characters: long ones keep a hash of the full name."""
    if len(group) <= 32:
        return group
    digest = hashlib.sha256(group.encode()).hexdigest()[:8]
    return f"{group[:23].rstrip('-')}-{digest}"


def group_tags(env: Environment, name: str, version: str, ami: str, run_id: str,
               state: str, release: str | None = None, **extra: str) -> dict[str, str]:
    labels = {tags.RELEASE: release} if release else {}
    return tags.kiln_tags(env.app, model.ROLE, run_id=run_id, version=version,
                          **{model.CLUSTER: env.cluster, model.SERVER_GROUP: name,
                             model.AMI: ami, model.STATE: state, **labels, **extra})


def user_data(env: Environment, name: str, version: str, extra: dict | None = None,
              release: str | None = None) -> str:
    """A boot script writing the environment file the app's service reads, then its command."""
    values = {"KILN_APP": env.app, "KILN_VERSION": version, "KILN_CLUSTER": env.cluster,
              "KILN_SERVER_GROUP": name, "KILN_ACCOUNT": env.aws.account_name,
              "KILN_REGION": env.region, "KILN_PORT": str(env.instance_port)}
    if release:
        values["KILN_RELEASE"] = release
    script = boot_script(env.settings.deploy.user_data, values, extra, env.region)
    return with_health(script, env.settings.deploy.get("launch_check"), name, env.region)


def boot_script(settings, values: dict[str, str], extra: dict | None, region: str) -> str:
    """The boot script of kiln.deploy.user_data: `values`, the configured environment and
    `extra` written into env_file (0600), and each of `secrets` read at boot from SSM or Secrets
    Manager by the instance's role. User data is readable by anyone who may describe the
    instance: a secret never appears in it, only its name."""
    values = dict(values)
    for key, value in {**(settings.environment or {}), **(extra or {})}.items():
        refused = environment_values.problem(key, value)
        if refused:
            raise KilnError(f"kiln.deploy.user_data.environment.{key}: {refused}")
        values[str(key)] = str(value)
    lines = "\n".join(f"{k}={shlex.quote(v)}" for k, v in values.items())
    path = shlex.quote(settings.env_file)
    script = ("#!/bin/bash\n# Written by Kiln: this server group's environment.\n"
              "set -euo pipefail\n"
              f"install -d -m 0755 \"$(dirname {path})\"\n"
              "umask 077\n"
              f"cat > {path} <<'KILN_ENVIRONMENT'\n{lines}\nKILN_ENVIRONMENT\n")
    for key, reference in (settings.get("secrets") or {}).items():
        script += _secret_line(str(key), str(reference), path, region)
    script += f"chmod 0600 {path}\n"
    if settings.command:
        script += settings.command + "\n"
    return script


def health_command(env: Environment) -> str | None:
    health = env.settings.deploy.get("launch_check")
    return (health or {}).get("command") or None


def with_health(script: str, health, group: str, region: str) -> str:
    """`script`, answering the group's launch lifecycle hook: CONTINUE once the health command
    passes, ABANDON when it fails every try or the script fails before it (set -e). The
    instance's role credentials and its id come from the instance metadata service (IMDSv2)."""
    if not health or not health.get("command"):
        return script
    complete = " ".join(shlex.quote(a) for a in [
        "aws", "--region", region, "autoscaling", "complete-lifecycle-action",
        "--auto-scaling-group-name", group, "--lifecycle-hook-name", LAUNCH_HOOK])
    answer = (
        "# Written by Kiln: this instance's answer to its launch lifecycle hook.\n"
        "kiln_launch() {\n"
        "  local token instance\n"
        "  token=\"$(curl -sSf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "
        "http://169.254.169.254/latest/api/token)\"\n"
        "  instance=\"$(curl -sSf -H \"X-aws-ec2-metadata-token: $token\" "
        "http://169.254.169.254/latest/meta-data/instance-id)\"\n"
        f"  {complete} --instance-id \"$instance\" --lifecycle-action-result \"$1\"\n"
        "}\n"
        "trap 'status=$?; if [ \"$status\" -ne 0 ]; then kiln_launch ABANDON || true; fi' EXIT\n")
    check = shlex.quote(str(health["command"]))
    tries, interval, timeout = int(health["retries"]) + 1, int(health["interval"]), \
        int(health["timeout"])
    tail = (
        "# Written by Kiln: the health command (kiln.deploy.launch_check) decides the launch.\n"
        f"for try in $(seq 1 {tries}); do\n"
        f"  if timeout {timeout} bash -c {check}; then kiln_launch CONTINUE; exit 0; fi\n"
        f"  echo \"kiln: health command failed (try $try of {tries})\" >&2\n"
        f"  if [ \"$try\" -lt {tries} ]; then sleep {interval}; fi\n"
        "done\n"
        "exit 1\n")
    strict = "set -euo pipefail\n"  # boot_script's: the answer is known before any step fails
    return script.replace(strict, strict + answer, 1) + tail


def _secret_line(key: str, reference: str, path: str, region: str) -> str:
    """Read one secret at boot (failing the boot script if it cannot) and append it."""
    kind, _, name = reference.partition(":")
    reads = {"ssm": ["ssm", "get-parameter", "--with-decryption", "--name", name,
                     "--query", "Parameter.Value"],
             "secretsmanager": ["secretsmanager", "get-secret-value", "--secret-id", name,
                                "--query", "SecretString"]}
    if not environment_values.SHELL_NAME.fullmatch(key) or kind not in reads or not name:
        raise KilnError(f"kiln.deploy.user_data.secrets.{key}: {reference!r} is not "
                        f"ssm:<parameter name> or secretsmanager:<secret id>")
    command = " ".join(shlex.quote(a) for a in
                       ["aws", "--region", region, *reads[kind], "--output", "text"])
    return f"value=\"$({command})\"\nprintf '%s=%q\\n' {key} \"$value\" >> {path}\n"


def create(env: Environment, name: str, image, instance_type: str, capacity: int,
           max_size: int, run_id: str, state: str, extra_tags: dict | None = None,
           extra_environment: dict | None = None) -> None:
    """Target group (behind a load balancer), launch template, then the Auto Scaling group:
    all tagged at creation."""
    _check_health(env)
    labels = group_tags(env, name, image.version, image.id, run_id, state,
                        getattr(image, "release", None), **(extra_tags or {}))
    data = {
        "ImageId": image.id, "InstanceType": instance_type,
        "IamInstanceProfile": {"Arn": env.instance_profile_arn},
        # Only the load balancer (if any) reaches the instances: no public IP, whatever the
        # subnet maps, unless kiln.deploy.egress says the instances reach AWS's APIs over one
        # (their security group still admits nothing but the load balancer).
        "NetworkInterfaces": [{"DeviceIndex": 0,
                               "AssociatePublicIpAddress": env.settings.deploy.egress == "public",
                               "Groups": [env.security_group_id]}],
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled",
                            "HttpPutResponseHopLimit": 1},
        "UserData": base64.b64encode(
            user_data(env, name, image.version, extra_environment,
                      getattr(image, "release", None)).encode()).decode(),
        "TagSpecifications": [tags.spec("instance", labels), tags.spec("volume", labels)],
    }
    with _kept_only_with_the_group(env, name) as made:
        made["tg"] = _target_group(env, name, labels) if env.balanced else None
        remove_leftover_template(env, name)
        template = env.client("ec2").create_launch_template(
            LaunchTemplateName=name, LaunchTemplateData=data,
            TagSpecifications=[tags.spec("launch-template", labels)])["LaunchTemplate"]
        made["template"] = template["LaunchTemplateId"]
        if health_command(env):
            # Empty until its hook is on, so that every instance it launches waits for it.
            _create_group(env, name, template, 0, max_size, made["tg"], labels)
            _put_launch_hook(env, name)
            env.client("autoscaling").update_auto_scaling_group(
                AutoScalingGroupName=name, MinSize=capacity, DesiredCapacity=capacity,
                MaxSize=max(max_size, capacity))
        else:
            _create_group(env, name, template, capacity, max_size, made["tg"], labels)


def _check_health(env: Environment) -> None:
    health = env.settings.deploy.get("launch_check") or {}
    if health_command(env) and int(health["heartbeat_timeout"]) > MAX_HEARTBEAT:
        raise KilnError(f"kiln.deploy.launch_check.heartbeat_timeout: "
                        f"{health['heartbeat_timeout']} is over {MAX_HEARTBEAT}, the longest a "
                        f"lifecycle hook waits")


def _put_launch_hook(env: Environment, name: str) -> None:
    """Hold each new instance in Pending:Wait until its health command answers; no answer
    within the heartbeat timeout abandons it."""
    env.client("autoscaling").put_lifecycle_hook(
        AutoScalingGroupName=name, LifecycleHookName=LAUNCH_HOOK,
        LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
        HeartbeatTimeout=int(env.settings.deploy.launch_check.heartbeat_timeout),
        DefaultResult="ABANDON")


@contextlib.contextmanager
def _kept_only_with_the_group(env: Environment, name: str):
    """The target group and launch template a create makes are removed again when the group
    does not come to be (any error, Ctrl-C), so nothing blocks the next deploy's name."""
    made: dict[str, str | None] = {"tg": None, "template": None}
    try:
        yield made
    except BaseException:
        _discard(env, name, made["template"], made["tg"])
        raise


def _discard(env: Environment, name: str, template_id: str | None, tg: str | None) -> None:
    if not (template_id or tg):
        return
    try:
        if model.describe_group(env, name) is None:
            if template_id:
                delete_launch_template(env, template_id)
            if tg:
                delete_target_group(env, tg)
    except ClientError as error:  # the create's own error is the one to report
        say(f"could not remove launch template {template_id} and target group {tg} of "
            f"{name}: {error}; `invoke teardown` removes them")


def _create_group(env: Environment, name: str, template: dict, capacity: int, max_size: int,
                  tg: str | None, labels: dict[str, str]) -> None:
    """CreateAutoScalingGroup, retried while Auto Scaling does not know the new template yet."""
    settings = env.settings.deploy
    retry(retry=retry_if_exception(_template_propagating), wait=wait_exponential(0.25, max=10),
          stop=stop_after_delay(TEMPLATE_PROPAGATION), reraise=True)(
        env.client("autoscaling").create_auto_scaling_group)(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateId": template["LaunchTemplateId"],
                        "Version": str(template["LatestVersionNumber"])},
        MinSize=capacity, MaxSize=max(max_size, capacity), DesiredCapacity=capacity,
        VPCZoneIdentifier=",".join(env.subnet_ids), TargetGroupARNs=[tg] if tg else [],
        # A worker's health is Auto Scaling's own (EC2 status checks).
        HealthCheckType="ELB" if tg else "EC2",
        HealthCheckGracePeriod=settings.health_check.grace_period,
        Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": k != model.STATE,
               "ResourceId": name, "ResourceType": "auto-scaling-group"}
              for k, v in sorted(labels.items())])


def _template_propagating(error: BaseException) -> bool:
    """Auto Scaling's answer while a new launch template propagates from EC2."""
    return (isinstance(error, ClientError)
            and error.response["Error"]["Code"] == "ValidationError"
            and "launch template" in str(error).lower())


def remove_leftover_template(env: Environment, name: str) -> None:
    """A launch template of this cluster named for a group that does not exist (a deploy
    stopped between the two creates) would make CreateLaunchTemplate fail AlreadyExists."""
    found = env.client("ec2").describe_launch_templates(Filters=[
        {"Name": "launch-template-name", "Values": [name]},
        {"Name": f"tag:{model.CLUSTER}", "Values": [env.cluster]}])["LaunchTemplates"]
    if found and model.describe_group(env, name) is None:
        delete_launch_template(env, found[0]["LaunchTemplateId"])


def _target_group(env: Environment, name: str, labels: dict[str, str]) -> str:
    settings = env.settings.deploy
    return env.client("elbv2").create_target_group(
        Name=target_group_name(name), Protocol="HTTP", Port=env.instance_port,
        VpcId=env.vpc_id, TargetType="instance", HealthCheckProtocol="HTTP",
        HealthCheckPath=settings.health_check.path, Matcher={"HttpCode": "200"},
        HealthCheckIntervalSeconds=settings.health_check.interval,
        UnhealthyThresholdCount=settings.health_check.unhealthy_threshold,
        Tags=tags.to_list(labels))["TargetGroups"][0]["TargetGroupArn"]


def scale(env: Environment, name: str, capacity: int, max_size: int) -> None:
    """Pin the group at `capacity` (min = desired) so nothing but Kiln changes it."""
    cancel_scale_down(env, name)
    env.client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName=name, MinSize=capacity, DesiredCapacity=capacity,
        MaxSize=max(max_size, capacity))


def set_states(env: Environment, states: dict[str, str]) -> None:
    """Retag several groups in one call, so no reader ever sees two active groups."""
    env.client("autoscaling").create_or_update_tags(Tags=[
        {"ResourceId": name, "ResourceType": "auto-scaling-group", "Key": model.STATE,
         "Value": state, "PropagateAtLaunch": False} for name, state in states.items()])


def schedule_scale_down(env: Environment, name: str, delay_seconds: int) -> None:
    """Scale a disabled group to 0 after the delay, by Auto Scaling itself (no process waits)."""
    if delay_seconds <= 0:
        scale(env, name, 0, 0)
        return
    env.client("autoscaling").put_scheduled_update_group_action(
        AutoScalingGroupName=name, ScheduledActionName=SCALE_DOWN_ACTION,
        StartTime=datetime.now(UTC) + timedelta(seconds=delay_seconds),
        MinSize=0, DesiredCapacity=0)


def scheduled_scale_down(env: Environment, name: str) -> dict | None:
    actions = env.client("autoscaling").describe_scheduled_actions(
        AutoScalingGroupName=name, ScheduledActionNames=[SCALE_DOWN_ACTION]
    )["ScheduledUpdateGroupActions"]
    return actions[0] if actions else None


def cancel_scale_down(env: Environment, name: str) -> None:
    try:
        env.client("autoscaling").delete_scheduled_action(
            AutoScalingGroupName=name, ScheduledActionName=SCALE_DOWN_ACTION)
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("ValidationError", "ResourceNotFound"):
            raise


def set_weights(env: Environment, weights: dict[str, int]) -> None:
    """The listener's default action: a weighted forward to exactly these target groups."""
    if not weights:
        raise KilnError(f"refusing to leave listener {env.listener_arn} with nothing to forward to")
    env.client("elbv2").modify_listener(ListenerArn=env.listener_arn, DefaultActions=[{
        "Type": "forward", "ForwardConfig": {
            "TargetGroups": [{"TargetGroupArn": arn, "Weight": weight}
                             for arn, weight in weights.items()],
            "TargetGroupStickinessConfig": {"Enabled": False}}}])


def delete(env: Environment, name: str, target_group_arn: str | None,
           launch_template_id: str | None) -> None:
    """Delete the Auto Scaling group (and its instances), then its target group and template."""
    autoscaling = env.client("autoscaling")
    try:
        autoscaling.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
    except ClientError as error:
        if "not found" not in str(error).lower():
            raise
    _wait_gone(env, name)
    if target_group_arn:
        delete_target_group(env, target_group_arn)
    if launch_template_id:
        delete_launch_template(env, launch_template_id)


def delete_target_group(env: Environment, arn: str) -> None:
    try:
        env.client("elbv2").delete_target_group(TargetGroupArn=arn)
    except ClientError as error:
        if error.response["Error"]["Code"] != "TargetGroupNotFound":
            raise


def delete_launch_template(env: Environment, template_id: str) -> None:
    try:
        env.client("ec2").delete_launch_template(LaunchTemplateId=template_id)
    except ClientError as error:
        if "NotFound" not in error.response["Error"]["Code"]:
            raise


def _wait_gone(env: Environment, name: str) -> None:
    """ForceDelete terminates the instances first; the group disappears once they are gone."""
    retry(retry=retry_if_result(bool), wait=wait_exponential(0.25, max=15),
          stop=stop_after_delay(900), reraise=True)(model.describe_group)(env, name)


def orphans(env: Environment, known: set[str], listener_arns: set[str]) -> dict[str, list[str]]:
    """Target groups and launch templates of this cluster whose Auto Scaling group never came
    to be (an interrupted create): returns {"target_groups": [...], "launch_templates": [...]}."""
    result = {"target_groups": [], "launch_templates": []}
    templates = env.client("ec2").describe_launch_templates(
        Filters=[{"Name": f"tag:{model.CLUSTER}", "Values": [env.cluster]}])["LaunchTemplates"]
    for template in templates:
        if template["LaunchTemplateName"] not in known:
            result["launch_templates"].append(template["LaunchTemplateId"])
    elbv2 = env.client("elbv2")
    groups = [tg for page in elbv2.get_paginator("describe_target_groups").paginate()
              for tg in page["TargetGroups"] if tg.get("VpcId") == env.vpc_id]
    arns = [tg["TargetGroupArn"] for tg in groups if tg["TargetGroupArn"] not in listener_arns]
    for start in range(0, len(arns), 20):
        for desc in elbv2.describe_tags(ResourceArns=arns[start:start + 20])["TagDescriptions"]:
            found = tags.from_list(desc.get("Tags"))
            if (found.get(model.CLUSTER) == env.cluster
                    and found.get(model.SERVER_GROUP) not in known):
                result["target_groups"].append(desc["ResourceArn"])
    return result
