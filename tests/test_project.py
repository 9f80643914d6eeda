"""Finding the project root, the layout, and `init` (create and adopt)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mlbook.config import CONFIG_FILE
from mlbook.errors import ConfigError, ProjectError
from mlbook.project import Project, find_root
from mlbook.scaffold import init_project

EXPECTED = [
    ".gitignore",
    "Data_processing/README.md",
    "Datasets/README.md",
    "Datasets/weights/README.md",
    "Deployment/README.md",
    "EXPERIMENT_LOG.md",
    "Models/README.md",
    "Models/common/__init__.py",
    "NOTES.md",
    "mlbook.toml",
]


def _tree(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(root).parts
    )


def test_init_creates_layout_and_git(tmp_path: Path) -> None:
    result = init_project(tmp_path / "demo")
    root = tmp_path / "demo"
    assert _tree(root) == EXPECTED
    assert sorted(p.relative_to(root).as_posix() for p in result.created) == EXPECTED
    assert result.kept == []
    assert result.git == "initialised"
    assert (root / ".git").is_dir()
    assert result.project.name == "demo"
    for area in ("Datasets", "Models", "Deployment", "Data_processing"):
        assert (root / area).is_dir()
    assert ".mlbook/" in (root / ".gitignore").read_text()
    assert 'name = "demo"' in (root / CONFIG_FILE).read_text()


def test_init_adopts_without_overwriting(tmp_path: Path) -> None:
    root = tmp_path / "existing"
    (root / "Models").mkdir(parents=True)
    (root / "NOTES.md").write_text("my notes\n")
    (root / "Models" / "README.md").write_text("mine\n")
    result = init_project(root)
    assert (root / "NOTES.md").read_text() == "my notes\n"
    assert (root / "Models" / "README.md").read_text() == "mine\n"
    assert sorted(p.name for p in result.kept) == ["NOTES.md", "README.md"]
    again = init_project(root)
    assert again.created == []
    assert len(again.kept) == len(EXPECTED)


def test_init_inside_existing_git_repo_does_not_init(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    result = init_project(tmp_path / "repo" / "ml")
    assert result.git.startswith("existing repository at ")
    assert not (tmp_path / "repo" / "ml" / ".git").exists()


def test_init_refuses_nested_project_and_files(tmp_path: Path) -> None:
    init_project(tmp_path / "outer")
    with pytest.raises(ProjectError, match="is inside the mlbook project at"):
        init_project(tmp_path / "outer" / "Models" / "inner")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ProjectError, match="it is a file"):
        init_project(tmp_path / "afile")


def test_init_uses_lower_case_areas_when_present(tmp_path: Path) -> None:
    root = tmp_path / "lower"
    (root / "models").mkdir(parents=True)
    (root / "datasets").mkdir()
    project = init_project(root).project
    assert project.models_dir == root / "models"
    assert project.datasets_dir == root / "datasets"
    assert project.deployment_dir == root / "Deployment"
    assert not (root / "Models").exists()
    assert 'models = "models"' in (root / CONFIG_FILE).read_text()


def test_find_root_from_subdirectory(project: Project) -> None:
    deep = project.models_dir / "common"
    assert find_root(deep) == project.root
    os.chdir(deep)
    assert Project.find().root == project.root


def test_not_a_project(tmp_path: Path) -> None:
    with pytest.raises(
        ProjectError, match=r"not an mlbook project: no mlbook.toml in .*mlbook init"
    ):
        find_root(tmp_path)
    with pytest.raises(ProjectError, match="does not exist"):
        Project.open(tmp_path)


def test_bad_config_is_reported_on_open(project: Project) -> None:
    (project.root / CONFIG_FILE).write_text("[layout]\nmodels = 3\n")
    with pytest.raises(ConfigError, match=r"mlbook.toml:2: layout.models: expected str"):
        Project.find(project.root)


def test_configured_area_names(tmp_path: Path) -> None:
    root = tmp_path / "custom"
    root.mkdir()
    (root / CONFIG_FILE).write_text('[layout]\nmodels = "training"\n')
    project = Project.open(root)
    assert project.models_dir == root / "training"
    assert project.area_of(root / "training" / "x.py") == "models"
    assert project.area_of(root / "Datasets" / "d") == "datasets"
    assert project.area_of(root / "NOTES.md") is None
    assert project.outputs_dir == root / "training" / "outputs"
    assert project.exports_dir == root / "Deployment" / "exports"
    assert project.relative(root / "training" / "a.py") == "training/a.py"


def _project_with(root: Path, config: str) -> Path:
    root.mkdir()
    (root / CONFIG_FILE).write_text(config)
    return root


def test_areas_and_outputs_escaping_through_symlinks_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = _project_with(tmp_path / "p1", '[layout]\nmodels = "Models"\n')
    (root / "Models").symlink_to(outside)
    with pytest.raises(ConfigError) as info:
        Project.open(root)
    assert str(info.value) == (
        f"{root / CONFIG_FILE}:2: layout.models: Models resolves to {outside}, which is outside "
        "the project (a symbolic link?); use a directory inside the project"
    )
    root = _project_with(tmp_path / "p2", "")  # a default area name, not configured
    (root / "Models").mkdir()
    (root / "Models" / "outputs").symlink_to(outside)
    with pytest.raises(ConfigError, match=r"mlbook.toml: experiments.outputs: Models/outputs"):
        Project.open(root)
    root = _project_with(tmp_path / "p3", '[export]\ndir = "exports"\n')
    (root / "Deployment").mkdir()
    (root / "Deployment" / "exports").symlink_to(root)
    with pytest.raises(ConfigError, match=r"mlbook.toml:2: export.dir: .* is the project root"):
        Project.open(root)
    root = _project_with(tmp_path / "p4", "")
    (root / "Deployment").symlink_to(root / "Deployment")  # a loop
    with pytest.raises(ConfigError, match=r"layout.deployment: Deployment cannot be resolved"):
        Project.open(root)


def test_config_paths_leaving_the_project_are_refused_on_open(tmp_path: Path) -> None:
    root = _project_with(tmp_path / "p", '[experiments]\noutputs = "../../../escaped_outputs"\n')
    with pytest.raises(ConfigError, match=r"mlbook.toml:2: experiments.outputs: .* leaves the"):
        Project.open(root)
    (root / CONFIG_FILE).write_text(f'[layout]\nmodels = "{tmp_path}"\n')
    with pytest.raises(ConfigError, match=r"mlbook.toml:2: layout.models: .* is absolute"):
        Project.open(root)


def test_datasets_area_may_live_on_another_disk_through_a_symlink(tmp_path: Path) -> None:
    data_disk = tmp_path / "disk" / "data"
    data_disk.mkdir(parents=True)
    root = _project_with(tmp_path / "p", '[layout]\ndatasets = "Datasets"\n')
    (root / "Datasets").symlink_to(data_disk)
    inside = tmp_path / "p" / "Models"
    inside.mkdir()
    (inside / "outputs").symlink_to(root / "runs", target_is_directory=True)  # inside: fine
    project = Project.open(root)
    assert project.datasets_dir.resolve() == data_disk
    assert project.outputs_dir.resolve() == root / "runs"
