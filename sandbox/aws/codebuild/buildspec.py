"""A buildspec (version 0.2) as CodeBuild reads it: its env, its phases and its artifacts.

Only what the sandbox runs is read; a buildspec that is not YAML, not a mapping, or of another
version fails the build in DOWNLOAD_SOURCE with YAML_FILE_ERROR, as on AWS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

PHASES = ("install", "pre_build", "build", "post_build")


class BuildspecError(Exception):
    """YAML_FILE_ERROR: the message CodeBuild gives in DOWNLOAD_SOURCE's context."""


@dataclass
class Phase:
    commands: list[str] = field(default_factory=list)
    finally_: list[str] = field(default_factory=list)
    on_failure: str = "ABORT"


@dataclass
class Buildspec:
    variables: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)  # env name -> SSM parameter
    shell: str = "bash"
    phases: dict[str, Phase] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    base_directory: str = ""
    discard_paths: bool = False


def is_inline(buildspec: str | None) -> bool:
    """A project's buildspec is the text itself, or (one line, no colon) a file's path."""
    return bool(buildspec) and ("\n" in buildspec.strip() or ":" in buildspec)


def parse(text: str) -> Buildspec:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise BuildspecError(f"YAML_FILE_ERROR: {error}") from None
    if not isinstance(doc, dict):
        raise BuildspecError("YAML_FILE_ERROR: the buildspec is not a YAML mapping")
    if str(doc.get("version")) not in ("0.2", "0.1"):
        raise BuildspecError(f"YAML_FILE_ERROR: invalid buildspec version: "
                             f"{doc.get('version')!r}, expected 0.2")
    env = doc.get("env") or {}
    spec = Buildspec(variables={k: _text(v) for k, v in (env.get("variables") or {}).items()},
                     parameters=dict(env.get("parameter-store") or {}),
                     shell=env.get("shell", "bash"))
    for name, body in (doc.get("phases") or {}).items():
        if name not in PHASES:
            raise BuildspecError(f"YAML_FILE_ERROR: unknown phase {name!r}")
        body = body or {}
        spec.phases[name] = Phase(_commands(body.get("commands"), name),
                                  _commands(body.get("finally"), name),
                                  str(body.get("on-failure", "ABORT")).upper())
    artifacts = doc.get("artifacts") or {}
    spec.files = [_text(f) for f in artifacts.get("files") or []]
    spec.base_directory = _text(artifacts.get("base-directory", "") or "")
    spec.discard_paths = _text(artifacts.get("discard-paths", "no")).lower() in ("yes", "true")
    return spec


def _commands(found, phase: str) -> list[str]:
    """A phase's commands: each one a string (a `- run: x` line is a mapping to YAML, and
    CodeBuild refuses the buildspec)."""
    commands = found or []
    for number, command in enumerate(commands):
        if isinstance(command, (dict, list)):
            raise BuildspecError(f"YAML_FILE_ERROR: Expected Commands[{number}] to be of "
                                 f"string type: found subkeys instead at line of phase "
                                 f"{phase}")
    return [_text(c) for c in commands]


def _text(value) -> str:
    """YAML's scalars as the shell gets them (yes/no and numbers written back as text)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
