"""Many apps from one checkout: `kiln.app` and the apps under `kiln.apps`, each with its settings.

`kiln.apps.<name>` holds what differs for one app: `manifest` (default manifests/<name>.yaml, or
`kiln.manifest` for `kiln.app`), `stacks` (further clusters <name>-<stack> beside <name>, each with
its own environment stack), `bake` (any kiln.bake keys: run_list, cookbook_paths, attributes,
smoke_commands, base_ami…) and `deploy` (any kiln.deploy keys: port, capacity, health_check,
alarms, user_data…), each merged over the defaults key by key (a list replaces the default's).
A task given `--app NAME` runs with those settings; kiln.app's own entry, if any, applies too.
"""

from __future__ import annotations

import copy

from cloud import settings as settings_module
from cloud.errors import KilnError


def names(settings) -> list[str]:
    """Every app: kiln.app first, then kiln.apps in order."""
    return list(dict.fromkeys([settings.app, *(settings.get("apps") or {})]))


def for_app(settings, app: str | None, stack: str | None = None) -> settings_module.Settings:
    """The settings of one app (None: kiln.app): its kiln.apps entry merged over the defaults,
    and the deploy settings of its stack `stack` over those (a stack's own account, region…)."""
    app = app or settings.app
    entries = settings.get("apps") or {}
    if app not in names(settings):
        raise KilnError(f"--app {app}: not kiln.app ({settings.app}) and not under kiln.apps "
                        f"(known: {', '.join(names(settings))})")
    entry = entries.get(app) or {}
    raw = _plain(settings)
    raw["manifest"] = entry.get("manifest") or (
        settings.manifest if app == settings.app else f"manifests/{app}.yaml")
    raw["bake"] = merge(raw["bake"], entry.get("bake") or {})
    raw["deploy"] = merge(raw["deploy"], entry.get("deploy") or {})
    raw["deploy"] = merge(raw["deploy"], stack_deploy(entry, stack))
    raw["app"] = app
    return settings_module.validate(raw, [f"kiln.apps.{app} over the defaults"])


def stacks(settings, app: str) -> list[str | None]:
    """The clusters' stacks of an app: None (the cluster named after the app), then its stacks
    and the stack its tasks use by default (kiln.deploy.stack)."""
    entry = (settings.get("apps") or {}).get(app) or {}
    default = ((entry.get("deploy") or {}).get("stack")
               or (settings.get("deploy") or {}).get("stack"))
    return list(dict.fromkeys([None, *stack_names(entry), *([default] if default else [])]))


def stack_names(entry) -> list[str]:
    """The names of an app entry's stacks (each a name or a {name, deploy} mapping)."""
    return [s if isinstance(s, str) else s["name"] for s in entry.get("stacks") or []]


def stack_deploy(entry, stack: str | None) -> dict:
    """The deploy settings stack `stack` of an app entry overrides (none for a plain name)."""
    for item in entry.get("stacks") or []:
        if isinstance(item, dict) and item["name"] == stack:
            return item.get("deploy") or {}
    return {}


def clusters(settings) -> list[tuple[str, str | None]]:
    """(app, stack) of every cluster the settings describe."""
    return [(app, stack) for app in names(settings) for stack in stacks(settings, app)]


def merge(base: dict, extra: dict) -> dict:
    """`extra` over a copy of `base`, nested mappings merged key by key."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return list(value)
    return value
