"""Shared fixtures: every test runs in its own temporary directory with a clean env."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from mlbook.project import Project
from mlbook.scaffold import init_project

# The machine is shared and loaded: property tests never fail on time, only on results.
settings.register_profile(
    "mlbook", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("mlbook")


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run in a fresh directory with no MLBOOK_* variables and a fixed git identity."""
    for key in list(os.environ):
        if key.startswith("MLBOOK_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "mlbook tests")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "tests@mlbook.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "mlbook tests")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "tests@mlbook.invalid")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A freshly initialised project (with its own git repository) at tmp/proj."""
    return init_project(tmp_path / "proj").project
