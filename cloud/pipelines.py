"""A release pipeline per app: `kiln.apps.<app>.pipeline.stages`, in order, each with its action
and its gate. Checked when the settings load, like every other key (one line naming the key).

    kiln:
      apps:
        hello-web:
          pipeline:
            stages:
              - {name: commit, action: commit, commands: ["make test", "make lint"]}
              - {name: image, action: image}
              - {name: acceptance, action: acceptance, stack: acceptance,
                 command: "tests/acceptance.sh"}
              - {name: capacity, action: capacity, locustfile: tests/locustfile.py,
                 users: 50, duration: 2m, thresholds: {min_rps: 45, max_p95_ms: 300}}
              - {name: exploratory, action: exploratory, ttl: 8h}
              - {name: staging, action: deploy, stack: staging}
              - {name: approval, action: approval}
              - {name: production, action: production, percent: 10}

Gates: `passed` (the default) lets a version into a stage only when every stage before it has
passed for that version; `none` lets any version in (a pipeline's first stage, say).

`engine` says what runs the stages: `local` (the default: `invoke pipeline.run` on a laptop or a
CI runner) or `codepipeline` (`invoke bootstrap` makes the stack kiln-pipeline-<app>, a
CodePipeline whose CodeBuild actions run the same `invoke pipeline.run --stage …`), with its
`source`: an S3 object, a CodeCommit branch or a CodeConnections repository
(docs/pipeline-engines.md).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from cloud.errors import ConfigError

ACTIONS = ("commit", "image", "acceptance", "capacity", "exploratory", "deploy", "approval",
           "production")
# The actions a person completes (`invoke pipeline.approve` or `reject`), not the pipeline.
MANUAL = ("exploratory", "approval")
# What a capacity stage's thresholds may hold the load test's figures to.
CAPACITY_THRESHOLDS = ("min_rps", "max_p95_ms", "max_p99_ms", "max_error_percent")
GATES = ("passed", "none")
COMMON = ("name", "action", "gate")
# What each action takes beside the common keys: key → (type, required).
OPTIONS: dict[str, dict[str, tuple[type, bool]]] = {
    "commit": {"commands": (list, False), "publish": (bool, False)},
    "image": {},
    "acceptance": {"command": (str, True), "stack": (str, False), "timeout": (str, False)},
    "capacity": {"stack": (str, False), "locustfile": (str, False), "users": (int, False),
                 "spawn_rate": (int, False), "duration": (str, False),
                 "thresholds": (dict, False)},
    "exploratory": {"stack": (str, False), "ttl": (str, False)},
    "deploy": {"stack": (str, True), "steps": (str, False), "watch": (str, False)},
    "approval": {},
    "production": {"stack": (str, False), "percent": (int, False), "steps": (str, False),
                   "watch": (str, False)},
}
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
ENGINES = ("local", "codepipeline")
PIPELINE_KEYS = ("stages", "engine", "source", "compute_type")
# A source's kind → the keys it requires and those it may take.
SOURCES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "s3": ((), ("bucket", "key")),
    "codecommit": (("repository",), ("branch",)),
    "codeconnections": (("connection", "repository"), ("branch",)),
}
COMPUTE_TYPES = ("BUILD_GENERAL1_SMALL", "BUILD_GENERAL1_MEDIUM", "BUILD_GENERAL1_LARGE")
_CONNECTION = re.compile(r"arn:aws[a-z-]*:(codeconnections|codestar-connections):[a-z0-9-]+:"
                         r"\d{12}:connection/[0-9a-f-]{36}")


@dataclass(frozen=True)
class Stage:
    name: str
    action: str
    gate: str = "passed"
    options: dict = field(default_factory=dict)

    def get(self, key: str, default=None):
        value = self.options.get(key)
        return default if value is None else value


def check(app: str, raw) -> list[Stage]:
    """The stages of `kiln.apps.<app>.pipeline`, or ConfigError naming the key at fault."""
    where = f"kiln.apps.{app}.pipeline"
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with `stages`, got {raw!r}")
    for key in raw:
        if key not in PIPELINE_KEYS:
            raise ConfigError(f"{where}.{key}: unknown key{_nearest(key, list(PIPELINE_KEYS))}")
    stages = raw.get("stages") or []
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"{where}.stages: expected a list of stages, got {stages!r}")
    found: list[Stage] = []
    for index, entry in enumerate(stages):
        stage = _stage(f"{where}.stages[{index}]", entry)
        if any(s.name == stage.name for s in found):
            raise ConfigError(f"{where}.stages[{index}].name: {stage.name!r} is used twice")
        found.append(stage)
    engine(app, raw, found)
    return found


@dataclass(frozen=True)
class Engine:
    """What runs an app's stages on AWS: its source and its CodeBuild compute type."""

    source: dict
    compute_type: str = "BUILD_GENERAL1_SMALL"

    @property
    def kind(self) -> str:
        return self.source["kind"]


def engine(app: str, raw, stages: list[Stage] | None = None) -> Engine | None:
    """The app's `codepipeline` engine, or None when its stages run locally (`local`, unset)."""
    where = f"kiln.apps.{app}.pipeline"
    if not isinstance(raw, dict) or raw.get("engine", "local") == "local":
        for key in ("source", "compute_type"):
            if isinstance(raw, dict) and raw.get(key) is not None:
                raise ConfigError(f"{where}.{key}: only for engine codepipeline")
        return None
    if raw["engine"] not in ENGINES:
        raise ConfigError(f"{where}.engine: {raw['engine']!r} is not one of {', '.join(ENGINES)}")
    stages = stages if stages is not None else check(app, {"stages": raw.get("stages")})
    _check_approval(where, stages)
    compute = raw.get("compute_type") or "BUILD_GENERAL1_SMALL"
    if compute not in COMPUTE_TYPES:
        raise ConfigError(f"{where}.compute_type: {compute!r} is not one of "
                          f"{', '.join(COMPUTE_TYPES)}")
    return Engine(_source(f"{where}.source", app, raw.get("source")), compute)


def _check_approval(where: str, stages: list[Stage]) -> None:
    """CodePipeline stops at a manual approval before production: the stages must have one. An
    exploratory stage keeps an environment up until people decide, which a build cannot wait
    for: on CodePipeline that is an approval stage (with staging as the place to try it)."""
    names = [s.action for s in stages]
    if "exploratory" in names:
        index = names.index("exploratory")
        raise ConfigError(f"{where}.stages[{index}] ({stages[index].name}): engine codepipeline "
                          f"runs no exploratory stage: use an approval stage after a deploy "
                          f"stage, or the local engine")
    if "production" in names and ("approval" not in names
                                  or names.index("approval") > names.index("production")):
        raise ConfigError(f"{where}.stages: engine codepipeline needs an approval stage before "
                          f"the production stage")


def _source(where: str, app: str, raw) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with `kind` "
                          f"({', '.join(SOURCES)}), got {raw!r}")
    kind = raw.get("kind")
    if kind not in SOURCES:
        raise ConfigError(f"{where}.kind: {kind!r} is not one of {', '.join(SOURCES)}")
    required, optional = SOURCES[kind]
    for key, value in raw.items():
        if key != "kind" and key not in required + optional:
            raise ConfigError(f"{where}.{key}: unknown key for a {kind} source"
                              f"{_nearest(key, [*required, *optional])}")
        if key != "kind" and value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}.{key}: expected a string, got {value!r}")
    for key in required:
        if not raw.get(key):
            raise ConfigError(f"{where}.{key}: a {kind} source needs it")
    source = {"kind": kind, **{k: raw[k] for k in required}}
    if kind == "s3":
        source["bucket"] = raw.get("bucket") or ""  # empty: the pipeline's artifact bucket
        source["key"] = raw.get("key") or f"source/{app}.zip"
    else:
        source["branch"] = raw.get("branch") or "main"
    if kind == "codeconnections" and not _CONNECTION.fullmatch(source["connection"]):
        raise ConfigError(f"{where}.connection: {source['connection']!r} is not a connection "
                          f"ARN (arn:aws:codeconnections:REGION:ACCOUNT:connection/ID)")
    if kind == "codeconnections" and source["repository"].count("/") != 1:
        raise ConfigError(f"{where}.repository: {source['repository']!r} is not owner/name")
    return source


def _stage(where: str, entry) -> Stage:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping (name, action, gate…), got {entry!r}")
    action = entry.get("action")
    if action not in ACTIONS:
        raise ConfigError(f"{where}.action: {action!r} is not one of {', '.join(ACTIONS)}")
    allowed = OPTIONS[action]
    for key in entry:
        if key not in COMMON and key not in allowed:
            known = [*COMMON, *allowed]
            raise ConfigError(f"{where}.{key}: unknown key for a {action} stage"
                              f"{_nearest(key, known)}")
    name = entry.get("name", action)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}.name: {name!r} must be lowercase letters, digits, dashes")
    gate = entry.get("gate", "passed")
    if gate not in GATES:
        raise ConfigError(f"{where}.gate: {gate!r} is not one of {', '.join(GATES)}")
    options = {}
    for key, (kind, required) in allowed.items():
        value = entry.get(key)
        if value is None:
            if required:
                raise ConfigError(f"{where}.{key}: a {action} stage needs it")
            continue
        if kind is list and not (isinstance(value, list) and all(isinstance(v, str)
                                                                  for v in value)):
            raise ConfigError(f"{where}.{key}: expected a list of strings, got {value!r}")
        if kind is not list and (not isinstance(value, kind) or
                                 (kind is int and isinstance(value, bool))):
            raise ConfigError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
        if kind is int and value < 1:
            raise ConfigError(f"{where}.{key}: expected a whole number above 0, got {value!r}")
        if key == "thresholds":
            _thresholds(f"{where}.{key}", value)
        options[key] = value
    return Stage(name, action, gate, options)


def _thresholds(where: str, value: dict) -> None:
    for key, limit in value.items():
        if key not in CAPACITY_THRESHOLDS:
            raise ConfigError(f"{where}.{key}: unknown threshold"
                              f"{_nearest(key, list(CAPACITY_THRESHOLDS))} (thresholds: "
                              f"{', '.join(CAPACITY_THRESHOLDS)})")
        if isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 0:
            raise ConfigError(f"{where}.{key}: expected a number, 0 or more, got {limit!r}")


def _nearest(key, known: list[str]) -> str:
    match = difflib.get_close_matches(str(key), known, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""
