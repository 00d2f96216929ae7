"""A service nobody calls (a worker, kiln.deploy.load_balancer: false): bootstrap makes its
environment without a load balancer, its server groups have Auto Scaling's EC2 health and no
target group, and its rollouts have no listener steps: a canary is judged on its alarms and its
instances' health."""

import base64
import time

import pytest

from accounts import bootstrap as kiln_bootstrap
from cloud import apps, stacks
from cloud.target import connect
from orchestrator import operations
from orchestrator import stack as env_stacks
from tests.cloud_init_helpers import console
from tests.conftest import deep_merge
from tests.deploy_helpers import FAST, admin_of, make_image, make_unhealthy
from tests.machine_helpers import promoted_web_image

BACKLOG = "worker-backlog"
APPS = {"worker": {"deploy": {"load_balancer": False, "alarms": [BACKLOG],
                              "canary": {"capacity": "proportional"}}}}
SETTINGS = deep_merge(FAST, {"apps": APPS})


@pytest.fixture
def worker(clean_sandbox, kiln_settings):
    """The worker's settings, after `invoke bootstrap` of prod and the worker's environment."""
    return bootstrapped(kiln_settings(**SETTINGS))


def bootstrapped(settings):
    assert env_stacks.register_clusters(settings) == ["env-worker"]
    kiln_bootstrap.run(settings, connect(settings, admin=True), yes=True,
                       parts=("prod", "env-worker"))
    aws = connect(apps.for_app(settings, "worker"))
    daws = aws.account("prod")
    admin_of(daws).client("cloudwatch").put_metric_alarm(
        AlarmName=BACKLOG, Namespace="Worker", MetricName="Backlog", Statistic="Maximum",
        Period=60, EvaluationPeriods=1, Threshold=1000, ComparisonOperator="GreaterThanThreshold")
    return aws, daws


def test_bootstrap_gives_a_worker_no_load_balancer_and_no_way_in(worker):
    _aws, daws = worker
    outputs = stacks.outputs(daws, "env-worker")
    assert "ListenerArn" not in outputs and "LoadBalancerArn" not in outputs
    assert "InstanceProfileArn" in outputs and "LockTableName" in outputs
    assert daws.client("elbv2").describe_load_balancers()["LoadBalancers"] == []
    group = daws.client("ec2").describe_security_groups(
        GroupIds=[outputs["InstanceSecurityGroupId"]])["SecurityGroups"][0]
    assert group["IpPermissions"] == []


def test_a_worker_deploys_canaries_and_promotes_on_instance_health_and_alarms(worker):
    aws, daws = worker
    make_image(daws, "1.0.0", app="worker")
    first = operations.deploy(aws, version="1.0.0")
    assert first["result"] == "ok"
    assert [s["action"] for s in first["plan"]["steps"]] == ["create", "wait_healthy", "mark"]
    asg = daws.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=["worker-v001"])["AutoScalingGroups"][0]
    assert (asg["HealthCheckType"], asg.get("TargetGroupARNs", [])) == ("EC2", [])
    assert daws.client("elbv2").describe_target_groups()["TargetGroups"] == []
    status = operations.status(aws)
    assert status["url"] is None
    assert operations.status_lines(status)[0].endswith("(no load balancer)")
    assert [(g["name"], g["state"], g["desired"], g["healthy"])
            for g in status["server_groups"]] == [("worker-v001", "active", 2, 2)]

    make_image(daws, "1.1.0", app="worker")
    canary = operations.canary(aws, 50, version="1.1.0", watch="2s")
    assert [s["action"] for s in canary["plan"]["steps"]] == ["create", "wait_healthy", "watch"]
    promoted = operations.promote(aws, watch="0")
    assert promoted["result"] == "ok"
    assert {g["name"]: (g["state"], g["desired"]) for g in promoted["server_groups"]} == {
        "worker-v001": ("disabled", 2), "worker-v002": ("active", 2)}


def test_a_worker_canary_is_rolled_back_on_its_alarm_or_its_instances_health(worker):
    aws, daws = worker
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        make_image(daws, version, app="worker")
    operations.deploy(aws, version="1.0.0")
    cloudwatch = admin_of(daws).client("cloudwatch")

    def fire(step, runner):
        if step.action == "wait_healthy":
            cloudwatch.set_alarm_state(AlarmName=BACKLOG, StateValue="ALARM",
                                       StateReason="the canary's backlog grows")

    with pytest.raises(operations.RolledBack, match=f"alarm {BACKLOG} in ALARM"):
        operations.canary(aws, 50, version="1.1.0", watch="5s", observer=fire)
    cloudwatch.set_alarm_state(AlarmName=BACKLOG, StateValue="OK", StateReason="drained")

    def break_it(step, runner):
        if step.action == "create":
            make_unhealthy(daws, step.group)

    with pytest.raises(operations.RolledBack, match="0 of 1 instances InService and healthy"):
        operations.canary(aws, 50, version="1.2.0", watch="2s", observer=break_it)
    final = {g["name"]: (g["state"], g["desired"])
             for g in operations.status(aws)["server_groups"]}
    assert final == {"worker-v001": ("active", 2), "worker-v002": ("failed", 0),
                     "worker-v003": ("failed", 0)}


HOOK = "kiln-launch-health"


def checked_worker(clean_sandbox, kiln_settings, heartbeat_timeout: int,
                   command: str = "systemctl is-active worker", **deploy):
    """The worker with a health command: its groups carry a launch lifecycle hook."""
    health = {"command": command, "retries": 1, "interval": 1,
              "timeout": 5, "heartbeat_timeout": heartbeat_timeout}
    return bootstrapped(kiln_settings(**deep_merge(SETTINGS, {"apps": {"worker": {"deploy": {
        "launch_check": health, **deploy}}}})))


def autoscaling_endpoints(daws) -> list[str]:
    """The environment's interface endpoints of Auto Scaling: the instances' way to answer."""
    found = admin_of(daws).client("ec2", daws.region).describe_vpc_endpoints()["VpcEndpoints"]
    return [e["ServiceName"] for e in found if e["ServiceName"].endswith(".autoscaling")]


def test_a_worker_with_a_health_command_is_in_service_once_its_instances_answer(
        clean_sandbox, kiln_settings):
    """End to end: each instance runs the boot script of its launch template, whose AWS CLI
    reads the worker's SSM secret and completes the launch hook once the health command (the
    secret is in the environment file) passes, with the instance role's credentials, through
    the environment's SSM and Auto Scaling endpoints; nothing else completes it."""
    clean_sandbox.set_time_scale(0.01)  # the hook's 3600 s heartbeat: 36 s for the instances
    try:
        # Time for two machines to boot and run their AWS CLI (real seconds).
        aws, daws = checked_worker(
            clean_sandbox, kiln_settings, 3600, health_timeout="60s",
            command="grep -qx 'QUEUE_TOKEN=s3cr3t' /etc/kiln/environment",
            user_data={"secrets": {"QUEUE_TOKEN": "ssm:/worker/queue-token"}})
        admin_of(daws).client("ssm").put_parameter(Name="/worker/queue-token", Value="s3cr3t",
                                                   Type="SecureString")
        promoted_web_image(clean_sandbox, daws, "1.0.0", 200, app="worker")
        assert operations.deploy(aws, version="1.0.0")["result"] == "ok"
    finally:
        clean_sandbox.set_time_scale(None)
    scaling = admin_of(daws).client("autoscaling")
    (hook,) = scaling.describe_lifecycle_hooks(AutoScalingGroupName="worker-v001")[
        "LifecycleHooks"]
    assert (hook["LifecycleHookName"], hook["LifecycleTransition"], hook["HeartbeatTimeout"],
            hook["DefaultResult"]) == (HOOK, "autoscaling:EC2_INSTANCE_LAUNCHING", 3600,
                                       "ABANDON")
    (group,) = scaling.describe_auto_scaling_groups(AutoScalingGroupNames=["worker-v001"])[
        "AutoScalingGroups"]
    assert [i["LifecycleState"] for i in group["Instances"]] == ["InService"] * 2
    for instance in group["Instances"]:
        output = console(clean_sandbox, instance["InstanceId"])
        assert "health command failed" not in output and "failed" not in output, output
    assert autoscaling_endpoints(daws) == ["com.amazonaws.us-east-1.autoscaling"]
    template = admin_of(daws).client("ec2").describe_launch_template_versions(
        LaunchTemplateName="worker-v001")["LaunchTemplateVersions"][0]
    script = base64.b64decode(template["LaunchTemplateData"]["UserData"]).decode()
    assert "ssm get-parameter --with-decryption --name /worker/queue-token" in script
    assert ("complete-lifecycle-action --auto-scaling-group-name worker-v001 "
            f"--lifecycle-hook-name {HOOK}") in script


def test_a_worker_whose_health_command_fails_fails_its_deploy_naming_the_instance(
        clean_sandbox, kiln_settings):
    import threading

    aws, daws = checked_worker(clean_sandbox, kiln_settings, 3600)
    make_image(daws, "1.0.0", app="worker")
    failed = {}

    def deploy():
        try:
            operations.deploy(aws, version="1.0.0")
        except Exception as error:  # noqa: BLE001 - the test reads it below
            failed["error"] = error

    running = threading.Thread(target=deploy)
    running.start()
    scaling = admin_of(daws).client("autoscaling")
    deadline = time.monotonic() + 30
    held = []
    while not held and time.monotonic() < deadline and running.is_alive():
        groups = scaling.describe_auto_scaling_groups(AutoScalingGroupNames=["worker-v001"])[
            "AutoScalingGroups"]
        held = [i["InstanceId"] for g in groups for i in g["Instances"]
                if i["LifecycleState"] == "Pending:Wait"]
        time.sleep(0.05)
    assert held, "the group's instances never waited for their hook"
    # as the boot script does when every try of the command has failed
    scaling.complete_lifecycle_action(AutoScalingGroupName="worker-v001", LifecycleHookName=HOOK,
                                      InstanceId=held[0], LifecycleActionResult="ABANDON")
    running.join(60)
    assert (f"server group worker-v001: instance {held[0]} failed its health command "
            "(kiln.deploy.launch_check.command)") in str(failed.get("error"))
    final = {g["name"]: (g["state"], g["desired"])
             for g in operations.status(aws)["server_groups"]}
    assert final == {"worker-v001": ("failed", 0)}


def test_a_worker_whose_health_command_never_answers_fails_its_deploy(
        clean_sandbox, kiln_settings):
    aws, daws = checked_worker(clean_sandbox, kiln_settings, 30)  # abandoned after 0.06 s
    make_image(daws, "1.0.0", app="worker")
    with pytest.raises(Exception, match=r"server group worker-v001: instance i-[0-9a-f]+ did "
                                        r"not answer within "
                                        r"kiln.deploy.launch_check.heartbeat_timeout"
                                        r" its health command") as failed:
        operations.deploy(aws, version="1.0.0")
    assert "\n" not in str(failed.value)
    final = {g["name"]: (g["state"], g["desired"])
             for g in operations.status(aws)["server_groups"]}
    assert final == {"worker-v001": ("failed", 0)}


def test_the_instance_role_answers_launch_hooks_of_its_cluster_only(worker):
    from tests.test_instance_secrets import allowed, role_policies

    _aws, daws = worker
    policies = role_policies(daws, stacks.outputs(daws, "env-worker"))
    group = ("arn:aws:autoscaling:us-east-1:{}:autoScalingGroup:1a2b:autoScalingGroupName/{}")
    account = daws.account_id
    for action in ("autoscaling:CompleteLifecycleAction",
                   "autoscaling:RecordLifecycleActionHeartbeat"):
        assert allowed(policies, action, group.format(account, "worker-v007"))
        assert not allowed(policies, action, group.format(account, "billing-v001"))
    assert not allowed(policies, "autoscaling:SetDesiredCapacity",
                       group.format(account, "worker-v007"))
    assert autoscaling_endpoints(daws) == []  # no health command: no endpoint to pay for
