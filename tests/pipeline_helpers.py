"""The demo app's release pipeline on CodePipeline (orchestrator/codepipeline.py), for the tests
of its stack and the judges of its template."""

from __future__ import annotations

from cloud import settings as settings_module
from tests.conftest import deep_merge, project_config

STAGES = [
    {"name": "commit", "action": "commit", "commands": ["make test"]},
    {"name": "image", "action": "image"},
    {"name": "acceptance", "action": "acceptance", "stack": "acceptance",
     "command": "tests/acceptance.sh"},
    {"name": "staging", "action": "deploy", "stack": "staging"},
    {"name": "approval", "action": "approval"},
    {"name": "production", "action": "production", "percent": 10},
]
CONNECTION = ("arn:aws:codeconnections:us-east-1:123456789012:connection/"
              "0123abcd-0123-0123-0123-0123456789ab")
SOURCES = {
    "s3": {"kind": "s3"},
    "codecommit": {"kind": "codecommit", "repository": "hello-web", "branch": "main"},
    "codeconnections": {"kind": "codeconnections", "repository": "acme/hello-web",
                        "connection": CONNECTION},
}


def engine_config(source: str = "s3") -> dict:
    """kiln overrides: hello-web's pipeline on CodePipeline from the given kind of source."""
    return {"apps": {"hello-web": {"stacks": ["acceptance", "staging"], "pipeline": {
        "engine": "codepipeline", "source": SOURCES[source], "stages": STAGES}}}}


def engine_settings(source: str = "s3", **overrides) -> settings_module.Settings:
    raw = deep_merge(deep_merge(project_config(), engine_config(source)), overrides)
    return settings_module.validate(raw, ["test config"])
