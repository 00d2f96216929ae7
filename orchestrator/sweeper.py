"""The janitor's sweeper for expired self-service environments (`invoke env.up`).

Importing this module registers it (cloud.sweepers); it runs before the instance sweeper,
so an environment goes as a whole (listener rule, Auto Scaling group, template, target group).
"""

from cloud import sweepers, tags
from orchestrator import selfservice
from orchestrator.cluster import OWNER


def find(place, region: str, why) -> list[sweepers.Leftover]:
    deploy = place.settings.deploy
    if place.account_name != deploy.account or region != (deploy.region or place.region):
        return []
    pages = place.client("autoscaling", region).get_paginator(
        "describe_auto_scaling_groups").paginate(
        Filters=[{"Name": f"tag:{tags.ROLE}", "Values": [selfservice.ROLE]}])
    found = []
    for page in pages:
        for asg in page["AutoScalingGroups"]:
            labels = {t["Key"]: t["Value"] for t in asg.get("Tags", [])}
            reason = why(labels)
            if reason and labels.get(OWNER):
                found.append(sweepers.Leftover("self-service-env", asg["AutoScalingGroupName"],
                                              place.account_name, region, reason, labels))
    return found


def remove(place, region: str, items: list[sweepers.Leftover]) -> None:
    for owner in sorted({item.tags[OWNER] for item in items}):
        selfservice.down(place, owner)


SWEEPER = sweepers.register(sweepers.Sweeper("self-service-env", 5, find, remove))
