"""The script API (Experiment, Params) and discovery of Models/<ID>_<name>.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mlbook
from mlbook.errors import ExperimentError
from mlbook.experiments.api import Experiment, Params
from mlbook.experiments.discovery import (
    find_scripts,
    load_experiment,
    read_script,
    select_scripts,
    select_versions,
)
from mlbook.project import Project


def write(project: Project, name: str, body: str) -> Path:
    path = project.models_dir / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


SCRIPT = """
    import mlbook
    exp = mlbook.Experiment(base={"lr": 0.1}, versions={"small": {"w": 1}, "wide": {"w": 8}})

    @exp.train
    def train(run):
        return {}
"""


def test_versions_extend_base() -> None:
    exp = Experiment(base={"lr": 0.1, "w": 0}, versions={"a": {"w": 1}, "b": {"lr": 0.5}})
    assert list(exp.versions) == ["a", "b"]
    assert exp.params("a").to_dict() == {"lr": 0.1, "w": 1}
    assert exp.params("b").lr == 0.5


def test_no_versions_means_default() -> None:
    exp = Experiment(base={"lr": 0.1})
    assert list(exp.versions) == ["default"]


def test_grid_crosses_versions() -> None:
    exp = Experiment(versions={"s": {"w": 1}}, grid={"lr": [0.1, 0.2], "seed": [0]})
    assert list(exp.versions) == ["s-lr=0.1,seed=0", "s-lr=0.2,seed=0"]
    assert exp.params("s-lr=0.2,seed=0").to_dict() == {"w": 1, "lr": 0.2, "seed": 0}
    only_grid = Experiment(base={"w": 1}, grid={"lr": [1, 2]})
    assert list(only_grid.versions) == ["lr=1", "lr=2"]


def test_bad_versions_are_clear() -> None:
    with pytest.raises(
        ExperimentError, match="version 'a': expected a dict of parameters, got int"
    ):
        Experiment(versions={"a": 3})  # type: ignore[dict-item]
    with pytest.raises(ExperimentError, match="version name 'a b'"):
        Experiment(versions={"a b": {}})
    with pytest.raises(ExperimentError, match="grid 'lr': expected a non-empty list"):
        Experiment(grid={"lr": []})
    with pytest.raises(ExperimentError, match="unknown version 'x'; versions: default"):
        Experiment().params("x")


def test_params_attribute_access() -> None:
    p = Params({"lr": 0.1})
    assert p.lr == 0.1 and p["lr"] == 0.1 and dict(p) == {"lr": 0.1}
    with pytest.raises(AttributeError, match="no parameter 'width'; this version has: lr"):
        _ = p.width
    with pytest.raises(AttributeError, match="read-only"):
        p.lr = 3


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True), st.integers()))
def test_params_roundtrip(data: dict[str, int]) -> None:
    p = Params(data)
    assert p.to_dict() == data
    for key, value in data.items():
        assert getattr(p, key) == value


def test_hooks_register_and_build() -> None:
    exp = mlbook.Experiment(versions={"a": {"w": 2}})

    @exp.model
    def build(p: Params) -> int:
        return int(p.w) * 10

    assert exp.build_model("a") == 20
    assert exp.build_model({"w": 3}) == 30
    assert set(exp.hooks) == {"model"}


def test_find_and_select(project: Project) -> None:
    write(project, "E2_b.py", SCRIPT)
    write(project, "E10_c.py", SCRIPT)
    write(project, "E1_a.py", SCRIPT)
    write(project, "notes.py", "x = 1\n")
    assert [s.id for s in find_scripts(project)] == ["E1", "E2", "E10"]
    assert [s.id for s in select_scripts(project, ["E10", "E1"])] == ["E10", "E1"]
    with pytest.raises(
        ExperimentError, match=r"unknown experiment E7; experiments in Models/: E1, E2, E10"
    ):
        select_scripts(project, ["E7"])


def test_config_include_and_exclude(project: Project) -> None:
    for ident in ("E1", "E2", "E3"):
        write(project, f"{ident}_x.py", SCRIPT)
    toml = project.root / "mlbook.toml"
    text = toml.read_text()
    toml.write_text(text.replace("include = []", 'include = ["E3", "E1"]'))
    assert [s.id for s in select_scripts(Project.open(project.root))] == ["E3", "E1"]
    toml.write_text(text.replace("exclude = []", 'exclude = ["E2"]'))
    assert [s.id for s in select_scripts(Project.open(project.root))] == ["E1", "E3"]


def test_duplicate_ids(project: Project) -> None:
    write(project, "E1_a.py", SCRIPT)
    write(project, "E1_b.py", SCRIPT)
    with pytest.raises(ExperimentError, match="ID E1 is also used by"):
        find_scripts(project)


def test_load_and_versions(project: Project) -> None:
    write(project, "E1_a.py", SCRIPT)
    exp = load_experiment(project, "E1")
    assert select_versions(exp) == ["small", "wide"]
    assert select_versions(exp, ["wide"]) == ["wide"]
    assert select_versions(exp, skip=["small"]) == ["wide"]
    with pytest.raises(ExperimentError, match="unknown version big; versions: small, wide"):
        select_versions(exp, ["big"])


def test_read_script_gives_the_same_versions(project: Project) -> None:
    path = write(project, "E1_a.py", SCRIPT)
    (script,) = find_scripts(project)
    plan = read_script(project, script)
    assert plan.read == "static" and script.path == path
    assert select_versions(plan, skip=["small"]) == ["wide"]
    exp = load_experiment(project, "E1")
    assert plan.versions == {name: params.to_dict() for name, params in exp.versions.items()}
    assert plan.params("wide") == {"lr": 0.1, "w": 8}
    with pytest.raises(ExperimentError, match="unknown version 'big'; versions: small, wide"):
        plan.params("big")


def test_bad_scripts(project: Project) -> None:
    write(project, "E1_a.py", "import mlbook\n")
    write(project, "E2_a.py", "import mlbook\nexp = mlbook.Experiment()\n")
    write(project, "E3_a.py", "x = 1\nraise RuntimeError('nope')\n")
    with pytest.raises(ExperimentError, match=r"defines no mlbook\.Experiment at module level"):
        load_experiment(project, "E1")
    with pytest.raises(
        ExperimentError, match=r"no train hook; decorate a function with @exp\.train"
    ):
        load_experiment(project, "E2")
    with pytest.raises(
        ExperimentError, match=r"E3_a.py:2: the script failed to import: RuntimeError: nope"
    ):
        load_experiment(project, "E3")


def test_scripts_import_shared_code(project: Project) -> None:
    (project.models_dir / "common" / "maths.py").write_text("TWO = 2\n")
    write(
        project,
        "E1_a.py",
        """
        import mlbook
        from common.maths import TWO
        exp = mlbook.Experiment(versions={"v": {"n": TWO}})
        exp.train(lambda run: None)
        """,
    )
    assert load_experiment(project, "E1").params("v").n == 2
