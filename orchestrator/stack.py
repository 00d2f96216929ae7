"""The app environment stack (kiln-env-<app>, cloud/templates/env.yaml) in `invoke bootstrap`.

Importing this module registers the stack; it goes to the deploy account (kiln.deploy.account).
"""

from cloud import bootstrap

ENV_OUTPUTS = ("VpcId", "SubnetIds", "InstanceSecurityGroupId", "LoadBalancerArn",
               "LoadBalancerDnsName", "ListenerArn", "InstancePort", "InstanceProfileArn",
               "LockTableName", "AlarmNames")


def deploy_accounts(settings) -> list[str]:
    return [settings.deploy.account]


def env_parameters(place) -> dict[str, str]:
    return {"AppName": place.settings.app}


ENV_STACK = bootstrap.register(bootstrap.StackSpec(
    "env-{app}", "env.yaml", deploy_accounts, env_parameters, ENV_OUTPUTS))
