"""Outside judges of Kiln's security: parliament over every IAM policy in cloud/templates, bandit
over the code, checkov over the templates (the bootstrap's rendered operator policy stack and the
demo app's pipeline stack included). Each finding is fixed, or explained in
tests/judges/<judge>.yaml; an unexplained one fails here. checkov runs from its own venv (`make
setup` makes .venv-checkov: it pins an older boto3 than moto's server needs)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from accounts import bootstrap
from orchestrator import codepipeline
from tests.conftest import ROOT
from tests.judges.policies import as_json, documents
from tests.pipeline_helpers import engine_settings

JUDGES = ROOT / "tests" / "judges"
TEMPLATES = sorted((ROOT / "cloud" / "templates").glob("*.yaml"))
CODE = ["cloud", "packager", "provisioner", "orchestrator", "sandbox", "bench", "tasks.py"]
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


def explanations(judge: str) -> list[dict]:
    entries = yaml.safe_load((JUDGES / f"{judge}.yaml").read_text())
    assert all(str(entry.get("reason", "")).strip() for entry in entries), "a skip lacks reason"
    return entries


# What each judge's entries must name: the files (and resources) they explain, never "*" or
# left out, so an explanation never covers a file written after it.
NAMED = {"bandit": ("test", "files"), "parliament": ("template", "resource", "issue"),
         "checkov": ("check", "template", "resource")}


def explains(entry: dict, finding: dict, keys: tuple[str, ...]) -> bool:
    for key in keys:
        wanted = entry.get(key, "*")
        wanted = wanted if isinstance(wanted, list) else [wanted]
        if "*" not in wanted and finding[key] not in wanted:
            return False
    return True


def unexplained(findings: list[dict], entries: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """The findings no entry explains; an entry that explains none (stale) fails too."""
    unused = [e for e in entries if not any(explains(e, f, keys) for f in findings)]
    assert not unused, f"entries that explain no finding (remove them): {unused}"
    return [f for f in findings if not any(explains(e, f, keys) for e in entries)]


def test_each_explanation_names_the_files_it_explains():
    for judge, keys in NAMED.items():
        for entry in explanations(judge):
            for key in keys:
                wanted = entry.get(key, "*")
                wanted = wanted if isinstance(wanted, list) else [wanted]
                assert wanted and "*" not in wanted, f"{judge}.yaml: {entry} names no {key}"


def parliament_findings(rendered: Path) -> list[dict]:
    """parliament's findings over cloud/templates and the demo app's pipeline stack."""
    from parliament import analyze_policy_string

    pipeline = rendered / "pipeline.json"
    pipeline.write_text(codepipeline.template(engine_settings(), "hello-web"))
    found = []
    for template in [*TEMPLATES, pipeline]:
        for resource, document, policy in documents(template):
            analyzed = analyze_policy_string(as_json(policy), include_community_auditors=True)
            found += [{"template": template.name, "resource": resource, "document": document,
                       "issue": f.issue, "detail": str(f.detail)[:200]}
                      for f in analyzed.findings]
    return found


def bandit_findings() -> list[dict]:
    bandit = str(Path(sys.executable).with_name("bandit"))
    result = subprocess.run([bandit, "-q", "-r", *CODE, "-f", "json"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    report = json.loads(result.stdout)
    assert not report["errors"], report["errors"]
    return [{"test": r["test_id"], "files": r["filename"], "line": r["line_number"],
             "text": r["issue_text"]} for r in report["results"]]


def checkov_findings(rendered: Path) -> list[dict]:
    """checkov's failed checks over cloud/templates and the templates Kiln renders (offline:
    --skip-download keeps it from asking its vendor's API for guidelines)."""
    assert CHECKOV.exists(), f"{CHECKOV} is missing: `make setup` installs it"
    for template in TEMPLATES:
        shutil.copy(template, rendered / template.name)
    (rendered / "operator.json").write_text(bootstrap.operator_template())
    # The demo app's pipeline stack, as `invoke bootstrap` renders it for engine codepipeline.
    (rendered / "pipeline.json").write_text(codepipeline.template(engine_settings(),
                                                                  "hello-web"))
    result = subprocess.run(
        [str(CHECKOV), "-d", str(rendered), "--framework", "cloudformation", "-o", "json",
         "--quiet", "--compact", "--skip-download"], cwd=rendered, capture_output=True,
        text=True, timeout=600)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    reports = json.loads(result.stdout) if result.stdout.strip() else []
    reports = reports if isinstance(reports, list) else [reports]
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports), reports
    assert sum(r["summary"]["resource_count"] for r in reports) > 40  # every template was read
    return [{"check": f["check_id"], "template": Path(f["file_path"]).name,
             "resource": f["resource"].rsplit(".", 1)[-1], "name": f["check_name"]}
            for r in reports for f in r["results"]["failed_checks"]]


def test_every_iam_policy_kiln_writes_is_read_by_parliament():
    policies = [d for template in TEMPLATES for d in documents(template)]
    kinds = {document for _resource, document, _policy in policies}
    assert {"trust", "key policy", "policy"} <= kinds
    assert all("Statement" in policy for _r, _d, policy in policies)


def test_parliament_findings_are_all_explained(tmp_path):
    found = parliament_findings(tmp_path)
    left = unexplained(found, explanations("parliament"),
                       ("template", "resource", "document", "issue"))
    assert not left, json.dumps(left, indent=1)


def test_bandit_findings_are_all_explained():
    found = bandit_findings()
    left = unexplained(found, explanations("bandit"), ("test", "files"))
    assert not left, json.dumps(left, indent=1)


def test_checkov_findings_are_all_explained(tmp_path):
    found = checkov_findings(tmp_path)
    left = unexplained(found, explanations("checkov"), ("check", "template", "resource"))
    assert not left, json.dumps(left, indent=1)
