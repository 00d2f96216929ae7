"""Relative folders in the project's invoke.yaml belong to the project, not to the current
directory: `invoke -r DIR …` run from elsewhere finds the same sandbox state and dist/."""

from __future__ import annotations

from pathlib import Path

from invoke import Config

from cloud import settings
from tests.conftest import ROOT


def test_relative_state_dir_and_dist_are_the_projects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # as `invoke -r ROOT status` from another folder
    config = Config(project_location=str(ROOT))
    config.load_project()
    loaded = settings.load(config)
    assert Path(loaded.sandbox.state_dir) == ROOT / ".sandbox"
    assert Path(loaded.dist) == ROOT / "dist"


def test_absolute_folders_stay_as_given(tmp_path):
    config = Config(project_location=str(ROOT), overrides={"kiln": {
        "sandbox": {"state_dir": str(tmp_path / "box")}, "dist": str(tmp_path / "out")}})
    config.load_project()
    loaded = settings.load(config)
    assert loaded.sandbox.state_dir == str(tmp_path / "box")
    assert loaded.dist == str(tmp_path / "out")
