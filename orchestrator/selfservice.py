"""Self-service environments: one instance of a version for one person, with an expiry.

`invoke env.up --owner NAME` runs server group <app>-<owner>-vNNN (cluster <app>-<owner>) in the
app's environment, reached through the app's load balancer with the header
`<kiln.deploy.self_service.header>: NAME` (a listener rule) from the networks in
`kiln.deploy.self_service.source_cidrs` only (the rule's source-ip condition: from anywhere else
the request is the app's); `invoke env.down` removes it, and the janitor removes any whose
kiln:expires-at has passed.
"""

from __future__ import annotations

import re

from cloud import inputs, tags
from cloud.aws import Aws
from cloud.console import say
from cloud.errors import KilnError
from orchestrator import cluster as model
from orchestrator import environment, groups, health, images
from orchestrator.environment import Environment

ROLE = "self-service"
_OWNER = re.compile(r"^[a-z0-9][a-z0-9-]{0,19}$")
# An ALB rule's condition takes at most three values (and a rule five in all, the header's one
# among them).
MAX_SOURCE_CIDRS = 3


def source_cidrs(settings) -> list[str]:
    """kiln.deploy.self_service.source_cidrs, which must name the networks (a /0 is refused
    when settings load, unless kiln.deploy.self_service.from_anywhere)."""
    cidrs = settings.self_service.source_cidrs
    if not cidrs:
        raise KilnError("kiln.deploy.self_service.source_cidrs: empty; name the networks "
                        "(e.g. your office's 203.0.113.0/24) that may reach self-service "
                        "environments")
    if len(cidrs) > MAX_SOURCE_CIDRS:
        raise KilnError(f"kiln.deploy.self_service.source_cidrs: {len(cidrs)} networks; a "
                        f"listener rule's source-ip condition takes at most {MAX_SOURCE_CIDRS}")
    return list(cidrs)


def _env(aws: Aws, owner: str, env_cluster: str | None = None) -> Environment:
    if not _OWNER.match(owner or ""):
        raise KilnError(f"--owner: {owner!r} must be 1-20 lowercase letters, digits or dashes")
    return environment.load(aws, stack=owner, env_cluster=env_cluster or aws.settings.app)


def up(aws: Aws, owner: str, ttl: str | None = None, version: str | None = None,
       ami: str | None = None, dry_run: bool = False, env_cluster: str | None = None) -> dict:
    """`env_cluster`: whose environment (load balancer) it runs in; default the app's own. A
    pipeline's acceptance stage uses a non-production stack's (app-acceptance)."""
    settings = aws.settings.deploy
    env = _env(aws, owner, env_cluster)
    if not env.balanced:
        raise KilnError(f"env.up: app {env.app} has no load balancer (kiln.deploy.load_balancer "
                        f"is false): a self-service environment is reached through one")
    sources = source_cidrs(settings)
    seconds = inputs.seconds(ttl or settings.self_service.ttl, "--ttl")
    if seconds < 60:
        raise KilnError(f"--ttl: {ttl} is too short (at least 1m)")
    existing = model.read(env)
    if existing.groups:
        g = existing.groups[-1]
        raise KilnError(f"{owner} already has an environment ({g.name}, {g.version}, expires "
                        f"{g.tags.get(tags.EXPIRES_AT, '?')}): `invoke env.down --owner {owner}`")
    image = _image(aws, env, version, ami)
    name = existing.next_name()
    instance_type = settings.self_service.instance_type or settings.instance_type
    plan = {"owner": owner, "server_group": name, "version": image.version, "ami": image.id,
            "instance_type": instance_type, "capacity": 1, "ttl": inputs.human(seconds),
            "header": f"{settings.self_service.header}: {owner}", "sources": sources}
    say(f"plan: env.up {owner} — {name}: {image.version} ({image.id}), 1 × {instance_type}, "
        f"expires in {inputs.human(seconds)}, reached with header {plan['header']} from "
        f"{', '.join(sources)}")
    if dry_run:
        say("dry run: nothing changed")
        return {**plan, "result": "dry-run"}
    labels = {OWNER_TAG: owner, tags.EXPIRES_AT: tags.expires_at(seconds // 60)}
    groups.create(env, name, image, instance_type, 1, 1, tags.new_run_id(), model.ACTIVE,
                  extra_tags={**labels, tags.ROLE: ROLE},
                  extra_environment={"KILN_OWNER": owner})
    tg = model.describe_group(env, name)["TargetGroupARNs"][0]
    _add_rule(env, owner, tg, labels, sources)
    health.wait_healthy(env, name, 1, inputs.seconds(settings.health_timeout,
                                                     "kiln.deploy.health_timeout"))
    url = model.url(env)
    say(f"env {owner}: {name} is up; curl -H '{plan['header']}' {url}")
    return {**plan, "result": "ok", "expires_at": labels[tags.EXPIRES_AT], "url": url,
            "environment": client_environment(aws, url, plan["header"])}


def client_environment(aws: Aws, url: str, header: str) -> dict[str, str]:
    """What a test suite needs to reach the environment: KILN_URL and KILN_HEADER (the request
    header that selects it); in the sandbox also how to reach the sandbox's load balancer
    (sandbox/network/client.py: the name to ask for, its address, the CA to trust)."""
    found = {"KILN_URL": url, "KILN_HEADER": header}
    if aws.sandbox:
        from sandbox.network import client

        found.update(client.environment(aws.settings.sandbox.state_dir, url, aws.settings.app))
    return found


OWNER_TAG = model.OWNER


def _image(aws: Aws, env: Environment, version: str | None, ami: str | None):
    if version or ami:
        return images.resolve(env, version, ami)
    main = model.read(environment.load(aws))
    baseline = main.baseline()
    if baseline is None:
        raise KilnError(f"--version: {env.app} has no serving group to copy; give a version")
    return images.resolve(env, ami=baseline.ami)


def _add_rule(env: Environment, owner: str, target_group: str, labels: dict,
              sources: list[str]) -> None:
    elbv2 = env.client("elbv2")
    rules = elbv2.describe_rules(ListenerArn=env.listener_arn)["Rules"]
    used = {int(r["Priority"]) for r in rules if r["Priority"].isdigit()}
    priority = next(p for p in range(100, 50000) if p not in used)
    header = env.settings.deploy.self_service.header
    elbv2.create_rule(
        ListenerArn=env.listener_arn, Priority=priority,
        Conditions=[{"Field": "http-header",
                     "HttpHeaderConfig": {"HttpHeaderName": header, "Values": [owner]}},
                    {"Field": "source-ip", "SourceIpConfig": {"Values": sources}}],
        Actions=[{"Type": "forward", "TargetGroupArn": target_group}],
        Tags=tags.to_list(tags.kiln_tags(env.app, ROLE, **labels)))


def down(aws: Aws, owner: str, dry_run: bool = False, env_cluster: str | None = None) -> dict:
    env = _env(aws, owner, env_cluster)
    return _remove(env, owner, dry_run)


def _remove(env: Environment, owner: str, dry_run: bool) -> dict:
    cluster = model.read(env)
    names = [g.name for g in cluster.groups]
    say(f"plan: env.down {owner} — delete {', '.join(names) or 'nothing'} and its listener rule")
    if dry_run:
        say("dry run: nothing changed")
        return {"owner": owner, "deleted": [], "result": "dry-run", "would_delete": names}
    arns = {g.target_group_arn for g in cluster.groups if g.target_group_arn}
    elbv2 = env.client("elbv2")
    rules = elbv2.describe_rules(ListenerArn=env.listener_arn)["Rules"] if env.balanced else []
    for rule in rules:
        forwards = {a.get("TargetGroupArn") for a in rule.get("Actions", [])}
        if forwards & arns and not rule.get("IsDefault"):
            elbv2.delete_rule(RuleArn=rule["RuleArn"])
    for group in cluster.groups:
        groups.delete(env, group.name, group.target_group_arn, group.launch_template_id)
    say(f"env {owner}: removed {', '.join(names) or 'nothing (there was none)'}")
    return {"owner": owner, "deleted": names, "result": "ok"}
