"""The app environment stacks (cloud/templates/env.yaml) in `invoke bootstrap`.

Importing this module registers kiln-env-<app> for kiln.app; `register_clusters(settings)` adds
kiln-env-<cluster> for every further cluster: each app under kiln.apps and each of an app's
stacks (cluster <app>-<stack>). Each goes to its app's deploy account (kiln.deploy.account, or the
app's override), with AppName the cluster it serves.
"""

from cloud import apps, bootstrap
from orchestrator.environment import cluster_name

ENV_OUTPUTS = ("VpcId", "SubnetIds", "InstanceSecurityGroupId", "LoadBalancerArn",
               "LoadBalancerDnsName", "ListenerArn", "InstancePort", "InstanceProfileArn",
               "LockTableName", "AlarmNames")


def deploy_accounts(settings) -> list[str]:
    return [settings.deploy.account]


def env_parameters(place) -> dict[str, str]:
    return {"AppName": place.settings.app}


ENV_STACK = bootstrap.register(bootstrap.StackSpec(
    "env-{app}", "env.yaml", deploy_accounts, env_parameters, ENV_OUTPUTS))


def register_clusters(settings) -> list[str]:
    """Register the environment stack of every cluster beside kiln.app's; their parts."""
    parts = []
    for app, stack in apps.clusters(settings):
        cluster = cluster_name(app, stack)
        if cluster == settings.app:
            continue
        account = apps.for_app(settings, app).deploy.account
        bootstrap.register(bootstrap.StackSpec(
            f"env-{cluster}", "env.yaml", lambda _settings, account=account: [account],
            lambda _place, cluster=cluster: {"AppName": cluster}, ENV_OUTPUTS))
        parts.append(f"env-{cluster}")
    return parts
