"""The demo app's release pipeline on CodePipeline (orchestrator/codepipeline.py), for the tests
of its stack and the judges of its template."""

from __future__ import annotations

import io
import zipfile

import yaml

from cloud import settings as settings_module
from orchestrator import codepipeline
from tests.conftest import ROOT, deep_merge, project_config

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


def source_with_config(config: dict) -> bytes:
    """`invoke pipeline.push`'s archive of this checkout (its tracked files and the lock's
    wheels, kept in dist/wheelhouse between runs) whose invoke.yaml carries `config`, as the
    app's repository would."""
    wheels = codepipeline.wheelhouse(ROOT, ROOT / "dist" / "wheelhouse")
    archive = codepipeline.source_archive(ROOT, wheels)
    settings = {"kiln": deep_merge(project_config(), config)}
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as found, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as written:
        for item in found.infolist():
            body = yaml.safe_dump(settings).encode() if item.filename == "invoke.yaml" \
                else found.read(item)
            written.writestr(item, body)
    return out.getvalue()
