"""The bootstrap templates: cfn-lint clean, and their outputs are the agreed interface."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from accounts import bootstrap

TEMPLATES = sorted(bootstrap.TEMPLATES.glob("*.yaml"))
CFN_LINT = str(Path(sys.executable).with_name("cfn-lint"))


class TemplateLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !Sub…) as plain values."""


TemplateLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def test_there_are_templates():
    assert {"build.yaml", "account.yaml", "keys.yaml"} <= {path.name for path in TEMPLATES}


@pytest.mark.parametrize("template", TEMPLATES, ids=[p.name for p in TEMPLATES])
def test_cfn_lint_passes(template):
    result = subprocess.run([CFN_LINT, "--format", "parseable", str(template)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("spec", bootstrap.STACKS[:3], ids=lambda spec: spec.part)
def test_outputs_are_exactly_the_agreed_ones(spec):
    outputs = yaml.load(spec.body(), Loader=TemplateLoader)["Outputs"]
    assert set(spec.outputs) <= set(outputs)
    # RepoKeyFingerprint exists only for a signed repository, the pipeline subnet's outputs only
    # while an app's pipeline runs on CodePipeline, so no reader may require them.
    assert set(outputs) - set(spec.outputs) <= {"AmiKmsAliasName", "RepoKeyFingerprint",
                                                "PipelineSubnetId", "PipelineEgressIp"}


def test_cfn_lint_catches_a_broken_template(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("Resources:\n  B:\n    Type: AWS::S3::Bucket\n    Properties:\n"
                      "      VersioningConfiguration: {Status: Sometimes}\n")
    result = subprocess.run([CFN_LINT, str(broken)], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "Sometimes" in result.stdout
