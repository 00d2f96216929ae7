"""The app environment stacks (cloud/templates/env.yaml) in `invoke bootstrap`.

Importing this module registers kiln-env-<app> for kiln.app; `register_clusters(settings)` adds
kiln-env-<cluster> for every further cluster: each app under kiln.apps and each of an app's
stacks (cluster <app>-<stack>). Each goes to its cluster's deploy account and region
(kiln.deploy.account and region, or the app's or the stack's override), with AppName the cluster
it serves.
"""

import json
import re

from botocore.exceptions import ClientError

from accounts import bootstrap
from cloud import apps
from cloud.errors import KilnError
from orchestrator.environment import cluster_name

ENV_OUTPUTS = ("VpcId", "SubnetIds", "InstanceSecurityGroupId", "LoadBalancerArn",
               "LoadBalancerDnsName", "ListenerArn", "HttpListenerArn", "InstancePort",
               "InstanceProfileArn", "LockTableName", "AlarmNames")
# What SSM parameter names and Secrets Manager secret names may hold (no commas or wildcards:
# each becomes one Resource of the instance role's policy).
_PARAMETER_NAME = re.compile(r"/?[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*")
_SECRET_NAME = re.compile(r"[A-Za-z0-9/_+=.@\-]+")


def deploy_accounts(settings) -> list[str]:
    """kiln.app's deploy account (its own kiln.apps entry's, if it names one)."""
    return [apps.for_app(settings, None).deploy.account]


def app_deploy_region(settings) -> list[str]:
    """kiln.app's deploy region (its own kiln.apps entry's, if it names one)."""
    return deploy_region(apps.for_app(settings, None))


def deploy_region(settings) -> list[str]:
    """Where Kiln looks the environment up (orchestrator.environment): kiln.deploy.region, else
    kiln.aws.region."""
    return [settings.deploy.region or settings.aws.region]


def env_parameters(place) -> dict[str, str]:
    """kiln.app's cluster: its own kiln.apps entry over the defaults, as its deploys see them
    (the secrets its instances read at boot among them)."""
    return cluster_parameters(place, apps.for_app(place.settings, None), place.settings.app)


def cluster_parameters(place, settings, cluster: str) -> dict[str, str]:
    """The environment stack's parameters for `cluster`, from its app's settings."""
    deploy, account_id = settings.deploy, place.aws.account_id
    parameters, secrets = secret_arns(deploy.user_data, bootstrap.partition(place.region),
                                      place.region, account_id)
    balanced = deploy.load_balancer
    return {"AppName": cluster, "WithLoadBalancer": "true" if balanced else "false",
            "CertificateArn": certificate(deploy, place.region, account_id, place.where)
            if balanced else "",
            "SslPolicy": deploy.listener.ssl_policy,
            "InstancePort": str(deploy.port), "Egress": deploy.egress,
            "SecretParameterArns": ",".join(parameters), "SecretArns": ",".join(secrets),
            "AnswersLaunchHook": "true" if (deploy.get("launch_check") or {}).get("command")
            else "false"}


def certificate(deploy, region: str, account_id: str, where: str) -> str:
    """kiln.deploy.listener.certificate, which must be in the deploy account and region."""
    arn = deploy.listener.certificate
    if not arn:
        raise KilnError(f"kiln.deploy.listener.certificate: not set; the environment in {where} "
                        f"serves HTTPS only: name its ACM certificate (arn:aws:acm:{region}:"
                        f"{account_id}:certificate/…)")
    fields = arn.split(":")
    if fields[4] != account_id or fields[2] == "acm" and fields[3] != region:
        raise KilnError(f"kiln.deploy.listener.certificate: {arn} is not in {where}; a load "
                        f"balancer serves certificates of its own account and region only")
    return arn


def secret_arns(user_data, partition: str, region: str,
                account_id: str) -> tuple[list[str], list[str]]:
    """The ARNs of the SSM parameters and of the secrets kiln.deploy.user_data.secrets names:
    the instance role may read those and no others."""
    parameters, secrets = [], []
    for key, reference in (user_data.get("secrets") or {}).items():
        kind, _, name = str(reference).partition(":")
        field = f"kiln.deploy.user_data.secrets.{key}"
        if kind in ("ssm", "secretsmanager") and name.startswith("arn:"):
            (parameters if kind == "ssm" else secrets).append(_checked_arn(field, name, kind))
        elif kind == "ssm" and _PARAMETER_NAME.fullmatch(name):
            parameters.append(f"arn:{partition}:ssm:{region}:{account_id}:parameter/"
                              f"{name.lstrip('/')}")
        elif kind == "secretsmanager" and _SECRET_NAME.fullmatch(name):
            # A secret's ARN ends in a dash and six random characters.
            secrets.append(f"arn:{partition}:secretsmanager:{region}:{account_id}:secret:"
                           f"{name}-??????")
        else:
            raise KilnError(f"{field}: {reference!r} is not ssm:<parameter name> or "
                            f"secretsmanager:<secret id>")
    return parameters, secrets


def _checked_arn(field: str, arn: str, service: str) -> str:
    parts = arn.split(":")
    if len(parts) < 6 or parts[2] != service or not re.fullmatch(r"[\w/+=.@:-]+", arn):
        raise KilnError(f"{field}: {arn!r} is not an ARN of {service}")
    return arn


# The listener's default action as env.yaml declares it: a 503 until the first server group
# serves. Kiln then owns the action (ModifyListener, weighted forwards).
DEFAULT_ACTION = """\
      DefaultActions:
        - Type: fixed-response
          FixedResponseConfig:
            StatusCode: "503"
            ContentType: text/plain
            MessageBody: no server group is serving yet
"""


def live_listener(place, stack: str, template: str, changes: list[dict]) -> str:
    """CloudFormation updates a resource with every property its template gives: an update of
    the Listener (certificate, SSL policy, port) would put the 503 back and drop the traffic
    Kiln routes. For such an update the template declares the forward that is live instead."""
    if "Listener" not in {c["logical_id"] for c in changes if c["action"] == "Modify"}:
        return template
    if DEFAULT_ACTION not in template:
        raise KilnError("cloud/templates/env.yaml: the Listener's DefaultActions are not the "
                        "503 Kiln replaces; update orchestrator/stack.py's DEFAULT_ACTION")
    actions = _live_forward(place, stack)
    if not actions:
        return template
    return template.replace(DEFAULT_ACTION, f"      DefaultActions: {json.dumps(actions)}\n")


def _live_forward(place, stack: str) -> list[dict] | None:
    """The listener's default actions when Kiln set them (weighted forwards), in the form a
    template takes; None while it is the template's own or the stack has no listener."""
    try:
        listener = bootstrap.outputs(place.client("cloudformation"), stack).get("ListenerArn")
    except ClientError:
        return None
    if not listener:
        return None
    found = place.client("elbv2").describe_listeners(ListenerArns=[listener])["Listeners"][0]
    actions = found.get("DefaultActions", [])
    if not actions or any(a["Type"] != "forward" or "ForwardConfig" not in a for a in actions):
        return None
    return [{"Type": "forward", "ForwardConfig": {
        "TargetGroups": [{"TargetGroupArn": tg["TargetGroupArn"], "Weight": tg.get("Weight", 1)}
                         for tg in a["ForwardConfig"]["TargetGroups"]],
        "TargetGroupStickinessConfig": {"Enabled": bool(a["ForwardConfig"].get(
            "TargetGroupStickinessConfig", {}).get("Enabled", False))}}} for a in actions]


ENV_STACK = bootstrap.register(bootstrap.StackSpec(
    "env-{app}", "env.yaml", deploy_accounts, env_parameters, ENV_OUTPUTS, app_deploy_region,
    live=live_listener))


def register_clusters(settings) -> list[str]:
    """Register the environment stack of every cluster beside kiln.app's; their parts."""
    parts = []
    for app, stack in apps.clusters(settings):
        cluster = cluster_name(app, stack)
        if cluster == settings.app:
            continue
        deploy = apps.for_app(settings, app, stack).deploy
        bootstrap.register(bootstrap.StackSpec(
            f"env-{cluster}", "env.yaml", lambda _settings, account=deploy.account: [account],
            lambda place, app=app, stack=stack, cluster=cluster: cluster_parameters(
                place, apps.for_app(place.settings, app, stack), cluster), ENV_OUTPUTS,
            lambda settings, app=app, stack=stack: deploy_region(
                apps.for_app(settings, app, stack)), live=live_listener))
        parts.append(f"env-{cluster}")
    return parts
