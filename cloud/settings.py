"""Kiln's settings: the `kiln` key of Invoke's config tree, validated at load.

Defaults live in the project's invoke.yaml; Invoke layers on top of it the user's files, the
`-f FILE` runtime file and `INVOKE_KILN_*` environment variables. Validation names the key and the
files it may have come from, and suggests the nearest valid key for a typo.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any

from cloud import pipelines, user_data
from cloud.errors import ConfigError


class Settings(dict):
    """A validated section of settings: a dict that also reads as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass(frozen=True)
class Value:
    """A leaf setting: its type, whether it may be null, and the values it may take."""

    kind: type | tuple[type, ...]
    nullable: bool = False
    choices: tuple[Any, ...] = ()
    minimum: int | None = None

    def check(self, key: str, value: Any) -> Any:
        if value is None:
            if self.nullable:
                return None
            raise ConfigError(f"{key}: a value is required")
        if self.kind is list:
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
            return list(value)
        if self.kind is int and isinstance(value, str) and value.lstrip("-").isdigit():
            value = int(value)  # env vars arrive as strings
        if self.kind == (int, float) and isinstance(value, str):
            value = _parse_number(key, value)
        if self.kind is bool and isinstance(value, str):
            value = _parse_bool(key, value)
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected {_kind_name(self.kind)}, got {value!r}")
        if self.choices and value not in self.choices:
            options = ", ".join(str(c) for c in self.choices)
            raise ConfigError(f"{key}: {value!r} is not one of {options}")
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{key}: must be at least {self.minimum}, got {value}")
        return value


@dataclass(frozen=True)
class StackList:
    """An app's further stacks: names, or {name, deploy} for a stack whose clusters differ
    (e.g. {name: staging, deploy: {account: staging, region: eu-west-1}})."""

    nullable = True

    def check(self, key: str, value: Any) -> list | None:
        if value is None:
            return None
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list of stack names or {{name, deploy}} "
                              f"mappings, got {value!r}")
        stacks = []
        for number, item in enumerate(value):
            where = f"{key}[{number}]"
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ConfigError(f"{where}: expected a stack name or a mapping with name, got "
                                  f"{item!r}")
            unknown = sorted(set(item) - {"name", "deploy"})
            if unknown:
                raise ConfigError(f"{where}.{unknown[0]}: unknown key (a stack has name and "
                                  f"deploy)")
            if not STACK_NAME.fullmatch(item["name"]):
                raise ConfigError(f"{where}.name: {item['name']!r} is not a stack name "
                                  f"(lowercase letters, digits and dashes)")
            if not isinstance(item.get("deploy") or {}, dict):
                raise ConfigError(f"{where}.deploy: expected a mapping of kiln.deploy keys")
            stacks.append({"name": item["name"], "deploy": item.get("deploy") or {}})
        return stacks


STACK_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")


@dataclass(frozen=True)
class Table:
    """A mapping of user-chosen names (accounts, regions…) to sections of one shape."""

    shape: dict


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "a whole number", bool: "true or false", dict: "a mapping",
             float: "a number"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _parse_number(key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{key}: expected a number, got {text!r}") from None


def _parse_bool(key: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{key}: expected true or false, got {text!r}")


S = Value(str)
S0 = Value(str, nullable=True)
L = Value(list)
B = Value(bool)
M0 = Value(dict, nullable=True)
F = Value((int, float), minimum=0)
F0 = Value((int, float), nullable=True, minimum=0)


def N(minimum: int = 0) -> Value:
    return Value(int, minimum=minimum)


def N0(minimum: int = 0) -> Value:
    return Value(int, nullable=True, minimum=minimum)


def C(*choices: str) -> Value:
    return Value(str, choices=choices)


ACCOUNT = {"id": S, "role": S0, "external_id": S0, "admin_role": S0, "profile": S0,
           "admin_profile": S0}
ACCOUNT_ID = re.compile(r"\d{12}")

SCHEMA: dict = {
    "target": C("sandbox", "aws"),
    "app": S,
    "manifest": S,
    # Further apps, each overriding the defaults (see cloud/apps.py).
    "apps": Table({"manifest": S0, "stacks": StackList(), "bake": M0, "deploy": M0,
                   "pipeline": M0}),
    # Foundation images (cloud/foundations.py): each a bake of its own, with no app.
    "foundations": Table({"bake": M0}),
    "dist": S,
    "aws": {
        "region": S,
        "profile": S0,
        "endpoint_url": S0,
        "retry_mode": C("standard", "adaptive", "legacy"),
        "max_attempts": N(1),
        "waiter_delay": F0,
    },
    "accounts": Table(ACCOUNT),
    "build_account": S,
    "sandbox": {
        "accounts": Table(ACCOUNT),
        "state_dir": S,
        "host": S,
        "port": N0(1),
        "chef_solo": S0,
        "base_provides": L,
        "watch": S0,
        "time_scale": F0,
        "account_state": C("new", "lived-in"),
        "keep_state": B,
    },
    "stacks": {"prefix": S},
    "bootstrap": {
        "repo_read_vpces": L,
        "repo_read_cidrs": L,
        "operator_principals": L,
        "bake_vpc_cidr": S,
        "bake_subnet_cidr": S,
        "pipeline_subnet_cidr": S,
        "log_retention_days": N(1),
    },
    "package": {
        "backend": C("auto", "rpmbuild", "fpm"),
        "fpm": S,
        "compression": C("zstd", "gzip", "xz", "none"),
        "compression_level": N0(0),
        "source_date_epoch": N0(0),
    },
    "repo": {
        "bucket": S0,
        "prefix": S,
        "sign": B,
        "gpg_key": S0,
        "gpg_home": S0,
        "key_fingerprint": S0,
        "lock_table": S0,
        "lock_timeout": N(1),
        "metadata_grace_seconds": N(0),
        "unlisted_grace_seconds": N(0),
    },
    "bake": {
        "base_ami": {
            "id": S0,
            "owners": L,
            "filters": M0,
            "parameter": S0,
        },
        "instance_type": S,
        "subnet": S0,
        "ssh_user": S,
        "ssh_port": N(1),
        "ssh_interface": C("public_ip", "private_ip"),
        "ssh_cidrs": L,
        "ssh_from_anywhere": B,
        "ssh_timeout": N(1),
        "staging_dir": S,
        "sudo": B,
        "chef_version": S,
        "chef_install_command": S0,
        "chef_solo": S,
        "chef_license": C("accept", "accept-silent", "accept-no-persist"),
        "chef_timeout": N(1),
        "smoke_commands": L,
        # The team's part of the chef-solo run (see docs/image-stage.md).
        "run_list": L,
        "cookbook_paths": L,
        "attributes": M0,
        "roles_dir": S0,
        "environments_dir": S0,
        "environment": S0,
        "foundation": S0,
        "smoke_retries": N(0),
        "smoke_retry_delay": N(0),
        "expires_minutes": N(1),
        "lock_timeout": N(0),
        "volume_size": N(1),
        "share": L,
        "copy_regions": L,
        "deprecate_after_days": N0(1),
    },
    "ami": {"keep": N(1)},
    "deploy": {
        "account": S,
        "region": S0,
        "stack": S0,
        "instance_type": S,
        "port": N(1),
        "load_balancer": B,
        "egress": C("endpoints", "nat", "public"),
        "capacity": {"desired": N(1), "max": N(1)},
        "canary": {
            "percent": N(1),
            "capacity": C("proportional", "baseline"),
            "min_capacity": N(1),
            "judge": {"min_requests": N(1), "max_error_rate_increase": F, "max_p99_ratio": F,
                      "min_p99_increase": F, "max_wait": S, "no_verdict": C("fail", "pass")},
        },
        "steps": S,
        "watch": S,
        "health_timeout": S,
        "disable": {"mode": C("keep", "scale_down"), "delay": S},
        "keep": N(0),
        "alarms": L,
        "lock": {"table": S0, "lease": S},
        # interval above the check's 5 s timeout, as AWS requires
        "health_check": {"path": S, "grace_period": N(0), "interval": N(6),
                         "unhealthy_threshold": N(2)},
        # The launch health check (docs/service-shapes.md): heartbeat_timeout within AWS's
        # 30..7200 s for a lifecycle hook.
        "launch_check": {"command": S0, "retries": N(0), "interval": N(1), "timeout": N(1),
                   "heartbeat_timeout": N(30)},
        "user_data": {"env_file": S, "environment": M0, "secrets": M0, "command": S0},
        "listener": {"certificate": S0, "ssl_policy": S},
        "self_service": {"ttl": S, "instance_type": S0, "header": S, "source_cidrs": L,
                         "from_anywhere": B},
    },
}


def validate(raw: Any, sources: list[str], schema: dict = SCHEMA, prefix: str = "kiln",
             foundation: str | None = None) -> Settings:
    """Check `raw` against `schema`; raise ConfigError naming the key and the files.
    `foundation`: the settings are that foundation's bake (no app in its run list)."""
    try:
        settings = _section(_for_target(raw) if schema is SCHEMA else raw, schema, prefix)
        if schema is SCHEMA:
            _check_real_accounts(settings)
            _check_ssh_cidrs(settings.bake)
            if foundation:
                _check_foundation_chef(settings.bake, f"kiln.foundations.{foundation}.bake")
            else:
                _check_chef(settings.bake)
            _check_foundations(settings)
            _check_listener(settings.deploy)
            _check_stacks(settings)
            _check_user_data(settings)
            for app, entry in settings.apps.items():
                pipelines.check(app, entry.pipeline)
        return settings
    except ConfigError as error:
        where = " or ".join(sources) if sources else "the Invoke config"
        raise ConfigError(f"{where}: {error}") from None


def _for_target(raw: Any) -> Any:
    """The sandbox's own accounts (kiln.sandbox.accounts) under kiln.accounts, only when the
    target is the sandbox; what the config sets in kiln.accounts wins, field by field."""
    if not isinstance(raw, dict) or raw.get("target") != "sandbox":
        return raw
    sandbox = raw.get("sandbox") if isinstance(raw.get("sandbox"), dict) else {}
    accounts = copy.deepcopy(sandbox.get("accounts") or {})
    for name, fields in (raw.get("accounts") or {}).items():
        if isinstance(fields, dict) and isinstance(accounts.get(name), dict):
            accounts[name].update(fields)
        else:
            accounts[name] = fields
    return {**raw, "accounts": accounts}


def _check_real_accounts(settings: Settings) -> None:
    """On real AWS, an account id must be one and no value may be a sandbox placeholder (a
    borrowed config would share images with, and trust, an account nobody chose). A custom
    kiln.aws.endpoint_url changes nothing: it may be a proxy in front of AWS itself."""
    if settings.target != "aws":
        return
    placeholders = {value: f"kiln.sandbox.accounts.{name}.{field}"
                    for name, spec in settings.sandbox.accounts.items()
                    for field in ("id", "external_id") if (value := spec.get(field))}
    for name, spec in settings.accounts.items():
        for field in ("id", "external_id"):
            value = spec.get(field)
            if value in placeholders:
                raise ConfigError(f"kiln.accounts.{name}.{field}: {value} is the sandbox's "
                                  f"placeholder ({placeholders[value]}), not for kiln.target aws")
        if not ACCOUNT_ID.fullmatch(spec.id):
            raise ConfigError(f"kiln.accounts.{name}.id: {spec.id!r} is not a 12-digit AWS "
                              f"account id")


def _check_stacks(settings: Settings) -> None:
    """Each app's own deploy settings and each stack's are whole kiln.deploy settings, in an
    account kiln.accounts names."""
    for app, entry in settings.apps.items():
        deploy = _merged(settings.deploy, entry.get("deploy") or {})
        for stack in entry.get("stacks") or []:
            where = f"kiln.apps.{app}.stacks[{stack['name']}].deploy"
            checked = _section(_merged(deploy, stack["deploy"]), SCHEMA["deploy"], where)
            if checked.account not in settings.accounts:
                known = ", ".join(sorted(settings.accounts)) or "none"
                raise ConfigError(f"{where}.account: {checked.account!r} is not an account in "
                                  f"kiln.accounts (known: {known})")
            region = checked.region
            if region and region != settings.aws.region and \
                    region not in settings.bake.copy_regions:
                raise ConfigError(f"{where}.region: {region} is neither kiln.aws.region nor in "
                                  f"kiln.bake.copy_regions, where images and their keys are")


def _check_user_data(settings: Settings) -> None:
    """kiln.deploy.user_data.environment, each app's and each stack's: shell names, one-line
    values and nothing that looks like a secret (cloud/user_data.py); checked at load, so a
    refusal comes before anything is made."""
    found = [("kiln.deploy", settings.deploy)]
    for app, entry in settings.apps.items():
        found.append((f"kiln.apps.{app}.deploy", entry.get("deploy")))
        found += [(f"kiln.apps.{app}.stacks[{stack['name']}].deploy", stack["deploy"])
                  for stack in entry.get("stacks") or []]
    for where, deploy in found:
        given = (deploy or {}).get("user_data") if isinstance(deploy, dict) else None
        environment = given.get("environment") if isinstance(given, dict) else None
        if environment is None:
            continue
        field = f"{where}.user_data.environment"
        if not isinstance(environment, dict):
            raise ConfigError(f"{field}: expected a mapping of NAME: value")
        refused = user_data.check(field, environment)
        if refused:
            raise ConfigError(refused)


def _merged(base: dict, extra: dict) -> dict:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _check_ssh_cidrs(bake: Settings) -> None:
    """Each bake SSH source is a network; a /0 only when kiln.bake.ssh_from_anywhere says so."""
    _check_cidrs(bake.ssh_cidrs, "kiln.bake.ssh_cidrs", "203.0.113.7/32",
                 "SSH on the bake instance", "kiln.bake.ssh_from_anywhere", bake.ssh_from_anywhere)


def _check_cidrs(cidrs: list[str], field: str, example: str, what: str, meant_field: str,
                 meant: bool) -> None:
    """Each entry is a network; one that lets anyone in (/0) only when `meant_field` says so."""
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"{field}: {cidr!r} is not a CIDR (e.g. {example})") from None
        if network.prefixlen == 0 and not meant:
            raise ConfigError(f"{field}: {cidr} lets anyone reach {what}; narrow it, or set "
                              f"{meant_field}: true if that is meant")


KILN_RECIPE = "recipe[kiln_app]"
# recipe[cookbook], recipe[cookbook::recipe], recipe[cookbook@1.2.3], role[name]: what a node's
# run list holds (chef-solo would fail on anything else, later and less clearly).
RUN_LIST_ENTRY = re.compile(r"(recipe\[[A-Za-z0-9_.-]+(::[A-Za-z0-9_.-]+)?(@[0-9.]+)?\]"
                            r"|role\[[A-Za-z0-9_.-]+\])")
# node.json keys Kiln writes itself: the team's attributes may not replace them.
KILN_ATTRIBUTES = ("kiln_app", "run_list")


def _check_chef(bake: Settings) -> None:
    """Each run list entry is recipe[…] or role[…], Kiln's recipe[kiln_app] is there exactly once
    (the image is made for the app it installs), a role needs the folder it is read from, and
    the team's attributes leave Kiln's own alone."""
    for entry in bake.run_list:
        if not RUN_LIST_ENTRY.fullmatch(entry):
            raise ConfigError(f"kiln.bake.run_list: {entry!r} is not recipe[COOKBOOK], "
                              f"recipe[COOKBOOK::RECIPE] or role[NAME]")
    if bake.run_list.count(KILN_RECIPE) != 1:
        raise ConfigError(f"kiln.bake.run_list: must hold {KILN_RECIPE} exactly once (the recipe "
                          f"that installs the app), where it should run; got {bake.run_list}")
    roles = [entry for entry in bake.run_list if entry.startswith("role[")]
    if roles and not bake.roles_dir:
        raise ConfigError(f"kiln.bake.run_list: {', '.join(roles)} needs kiln.bake.roles_dir, "
                          f"the folder of role files (NAME.json or NAME.rb) chef-solo reads")
    if bake.environment and not bake.environments_dir:
        raise ConfigError(f"kiln.bake.environment: {bake.environment!r} needs "
                          f"kiln.bake.environments_dir, the folder chef-solo reads it from")
    taken = [key for key in KILN_ATTRIBUTES if key in (bake.attributes or {})]
    if taken:
        raise ConfigError(f"kiln.bake.attributes.{taken[0]}: Kiln writes this one itself; put "
                          f"the team's attributes under names of their own")


# What a foundation's bake starts from: kiln.bake without the app's run list and smoke checks.
FOUNDATION_DEFAULTS = {"run_list": [], "smoke_commands": [], "foundation": None}


def foundation_bake(bake: dict, entry: dict | None) -> dict:
    """A foundation's bake settings: its own `bake` over kiln.bake (less the app's parts)."""
    return _merged({**bake, **FOUNDATION_DEFAULTS}, (entry or {}).get("bake") or {})


def _check_foundations(settings: Settings) -> None:
    """Each foundation's bake is whole kiln.bake settings with a run list of its own and no
    app; every foundation an app names is one of them."""
    for name, entry in settings.foundations.items():
        where = f"kiln.foundations.{name}.bake"
        if not STACK_NAME.fullmatch(name):
            raise ConfigError(f"kiln.foundations.{name}: not a foundation name (lowercase "
                              f"letters, digits and dashes)")
        raw = foundation_bake(settings.bake, entry)
        if raw.get("foundation"):
            raise ConfigError(f"{where}.foundation: a foundation is baked on a base image, not "
                              f"on another foundation")
        _check_foundation_chef(_section(raw, SCHEMA["bake"], where), where)
    named = [("kiln.bake.foundation", settings.bake.foundation)] + [
        (f"kiln.apps.{app}.bake.foundation", (entry.get("bake") or {}).get("foundation"))
        for app, entry in settings.apps.items()]
    for where, name in named:
        if name and name not in settings.foundations:
            known = ", ".join(sorted(settings.foundations)) or "none"
            raise ConfigError(f"{where}: {name!r} is not a foundation in kiln.foundations "
                              f"(known: {known})")


def _check_foundation_chef(bake: Settings, where: str) -> None:
    """A foundation's run list is its own: recipes and roles, not empty, without the app's
    recipe[kiln_app] (a foundation has no app)."""
    if not bake.run_list:
        raise ConfigError(f"{where}.run_list: empty; a foundation converges a run list of its "
                          f"own (e.g. [\"role[runtime]\"])")
    for entry in bake.run_list:
        if not RUN_LIST_ENTRY.fullmatch(entry):
            raise ConfigError(f"{where}.run_list: {entry!r} is not recipe[COOKBOOK], "
                              f"recipe[COOKBOOK::RECIPE] or role[NAME]")
    if KILN_RECIPE in bake.run_list:
        raise ConfigError(f"{where}.run_list: {KILN_RECIPE} installs an app; a foundation has "
                          f"none (the apps baked on it run it)")
    roles = [entry for entry in bake.run_list if entry.startswith("role[")]
    if roles and not bake.roles_dir:
        raise ConfigError(f"{where}.run_list: {', '.join(roles)} needs {where}.roles_dir")
    if bake.environment and not bake.environments_dir:
        raise ConfigError(f"{where}.environment: {bake.environment!r} needs "
                          f"{where}.environments_dir")


# An ACM certificate (or an IAM server certificate) an ALB listener may serve.
CERTIFICATE_ARN = re.compile(r"arn:aws(-cn|-us-gov)?:(acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+"
                             r"|iam::\d{12}:server-certificate/[\w+=,.@/-]+)")


def _check_listener(deploy: Settings) -> None:
    """The HTTPS listener's certificate is an ACM ARN; self-service environments are reached
    only from named networks, a /0 only when kiln.deploy.self_service.from_anywhere says so."""
    certificate = deploy.listener.certificate
    if certificate is not None and not CERTIFICATE_ARN.fullmatch(certificate):
        raise ConfigError(f"kiln.deploy.listener.certificate: {certificate!r} is not an ACM "
                          f"certificate ARN (arn:aws:acm:REGION:ACCOUNT:certificate/ID)")
    service = deploy.self_service
    _check_cidrs(service.source_cidrs, "kiln.deploy.self_service.source_cidrs", "203.0.113.0/24",
                 "self-service environments", "kiln.deploy.self_service.from_anywhere",
                 service.from_anywhere)


def _section(raw: Any, schema: dict, prefix: str) -> Settings:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {raw!r}")
    for key in raw:
        if key not in schema:
            raise ConfigError(f"{prefix}.{key}: unknown key{_nearest(key, schema)}")
    result = Settings()
    for key, spec in schema.items():
        path = f"{prefix}.{key}"
        if key not in raw and not isinstance(spec, dict | Table):
            if getattr(spec, "nullable", False):
                result[key] = None
                continue
            raise ConfigError(f"{path}: missing (set it in invoke.yaml)")
        result[key] = _item(raw.get(key), spec, path)
    return result


def _item(value: Any, spec: Any, path: str) -> Any:
    if isinstance(spec, Table):
        if value is None:
            return Settings()
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of names, got {value!r}")
        return Settings(
            {name: _section(v, spec.shape, f"{path}.{name}") for name, v in value.items()})
    if isinstance(spec, dict):
        return _section(value, spec, path)
    return spec.check(path, value)


def _nearest(key: str, schema: dict) -> str:
    match = difflib.get_close_matches(str(key), list(schema), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def load(ctx: Any) -> Settings:
    """The validated `kiln` settings of an Invoke context (or of a plain dict, for tests)."""
    config = getattr(ctx, "config", ctx)
    raw = _plain(config.get("kiln") if hasattr(config, "get") else None)
    if hasattr(config, "_env_prefix"):
        _check_environment(raw, config._env_prefix or "")
    return validate(_from_project(raw, getattr(config, "_project_prefix", None)),
                    _sources(config))


def _from_project(raw: Any, project: str | None) -> Any:
    """Relative folders in the config are the project's (where invoke.yaml is), not the current
    directory's: `invoke -r DIR …` from elsewhere finds the same sandbox and dist/."""
    if not project or not isinstance(raw, dict):
        return raw
    sandbox = raw.get("sandbox")
    if isinstance(sandbox, dict) and isinstance(sandbox.get("state_dir"), str):
        sandbox["state_dir"] = os.path.join(project, sandbox["state_dir"])
    if isinstance(raw.get("dist"), str):
        raw["dist"] = os.path.join(project, raw["dist"])
    _bake_paths(raw.get("bake"), project)
    for entries in (raw.get("apps"), raw.get("foundations")):
        for entry in (entries or {}).values() if isinstance(entries, dict) else ():
            if isinstance(entry, dict):
                _bake_paths(entry.get("bake"), project)
    return raw


def _bake_paths(bake: Any, project: str) -> None:
    """The team's cookbook, role and environment folders, relative to the project."""
    if not isinstance(bake, dict):
        return
    if isinstance(bake.get("cookbook_paths"), list):
        bake["cookbook_paths"] = [os.path.join(project, p) if isinstance(p, str) else p
                                  for p in bake["cookbook_paths"]]
    for key in ("roles_dir", "environments_dir"):
        if isinstance(bake.get(key), str):
            bake[key] = os.path.join(project, bake[key])


def _check_environment(raw: Any, prefix: str) -> None:
    """Invoke reads only the INVOKE_KILN_* variables naming a key it knows and ignores the rest:
    a mistyped one fails here like a mistyped key in a file."""
    start = f"{prefix}KILN_"
    given = sorted(name for name in os.environ if name.startswith(start))
    if not given:
        return
    known = {f"{prefix}{'_'.join(path).upper()}" for path in _leaves(raw, ["kiln"])}
    for name in given:
        if name not in known:
            match = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {match[0]}?)" if match else ""
            raise ConfigError(f"environment variable {name}: no such kiln setting{hint}")


def _leaves(value: Any, path: list[str]) -> list[list[str]]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in _leaves(item, [*path, str(key)])]
    return [path]


def _plain(value: Any) -> Any:
    """Invoke's DataProxy → plain dicts and lists, so validation sees ordinary values."""
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _sources(config: Any) -> list[str]:
    """Where the merged settings came from: the config files found, then INVOKE_KILN_* variables."""
    names = ("_system_path", "_user_path", "_project_path", "_runtime_path")
    paths = [getattr(config, name, None) for name in names]
    # Invoke records a .py candidate as found even when it does not exist: keep real files only.
    sources = [str(p) for p in paths if p and os.path.exists(p)]
    if (getattr(config, "_env", None) or {}).get("kiln"):
        sources.append("the INVOKE_KILN_* environment variables")
    return sources
