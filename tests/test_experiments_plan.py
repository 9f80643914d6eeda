"""Planning without importing scripts: the static reader, the child fallback and its cache."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from mlbook.cli import cli
from mlbook.deploy.bundle import script_settings
from mlbook.errors import ExperimentError
from mlbook.experiments.api import Experiment
from mlbook.experiments.discovery import find_experiment, load_script, read_script
from mlbook.experiments.plans import ScriptPlan, plan_of, read_plan
from mlbook.experiments.runner import plan
from mlbook.experiments.static import NotStatic, read_experiment
from mlbook.project import Project


def write(project: Project, name: str, body: str) -> Path:
    path = project.models_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def read(project: Project, ident: str) -> ScriptPlan:
    return read_script(project, find_experiment(project, ident))


def static(body: str) -> tuple[Experiment, tuple[str, ...]]:
    found = read_experiment(textwrap.dedent(body), "Models/E1_a.py")
    return found.experiment, found.hooks


def not_static(body: str) -> str:
    with pytest.raises(NotStatic) as caught:
        read_experiment(textwrap.dedent(body), "Models/E1_a.py")
    return str(caught.value)


# -- the static reader gives what importing the script gives ---------------------------------

STATIC_SCRIPTS = {
    "plain": """
        import mlbook
        import mlbook.experiments  # binds mlbook again: still the same module

        exp = mlbook.Experiment(
            title="plain",
            base={"lr": 1e-3, "epochs": 5, "hidden": [64, 64], "act": None},
            versions={"small": {"width": 16}, "large": {"width": 64, "lr": -2.5e-4}},
            dataset="digits",
            files=["labels.txt"],
        )

        @exp.model
        def build(p):
            return p.width

        @exp.train
        def train(run, model):
            return {}

        exp.predict(lambda model, inputs: inputs)
        """,
    "constants": """
        from mlbook import Experiment
        import torch  # never imported by the reader

        LR = 3e-3
        EPOCHS: int = 15
        BASE = {"lr": LR, "epochs": EPOCHS, "seed": 0}
        WIDTHS = dict(narrow={**BASE, "width": 8}, wide={**BASE, "width": 32})

        exp = Experiment(WIDTHS, grid={"seed": range(2)}, title="consts")

        @exp.train
        def train(run):
            return {"lr": LR}
        """,
    "grid only, main guard": """
        import mlbook as mb

        exp = mb.Experiment(base={"w": 1}, grid={"lr": [0.1, 0.01], "bn": (True, False)})

        @exp.train
        def train(run):
            return {}

        if __name__ == "__main__":
            exp.versions["extra"] = {}
            print(exp)
        """,
    "no versions": """
        import mlbook.experiments.api

        exp = mlbook.experiments.api.Experiment(base={"a": "x"})
        exp.train(print)
        """,
}


@pytest.mark.parametrize("name", sorted(STATIC_SCRIPTS))
def test_static_plans_equal_imported_ones(project: Project, name: str) -> None:
    path = write(project, "E1_a.py", STATIC_SCRIPTS[name].replace("import torch", "import os"))
    got = read(project, "E1")
    assert got.read == "static" and got.why == ""
    assert got == plan_of(load_script(path, project.models_dir))


def test_static_reading_details() -> None:
    exp, hooks = static(STATIC_SCRIPTS["constants"])
    assert hooks == ("train",)
    assert list(exp.versions) == [
        "narrow-seed=0",
        "narrow-seed=1",
        "wide-seed=0",
        "wide-seed=1",
    ]
    assert exp.params("wide-seed=1").to_dict() == {"lr": 3e-3, "epochs": 15, "seed": 1, "width": 32}
    _, hooks = static(STATIC_SCRIPTS["plain"])
    assert hooks == ("model", "predict", "train")


leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
)
literal = leaf | st.lists(leaf, max_size=3) | st.tuples(leaf, leaf)
names = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True)
params = st.dictionaries(names, literal, max_size=3)


@settings(deadline=None, max_examples=60)
@given(
    base=params,
    versions=st.none()
    | st.dictionaries(
        st.from_regex(r"[A-Za-z0-9][a-z0-9_.=-]{0,5}", fullmatch=True), params, max_size=3
    ),
    grid=st.none()
    | st.dictionaries(
        names, st.lists(st.integers() | st.text(max_size=3), min_size=1, max_size=2), max_size=2
    ),
)
def test_static_reading_matches_the_experiment(
    base: dict[str, Any], versions: dict[str, dict[str, Any]] | None, grid: dict[str, Any] | None
) -> None:
    source = (
        "import mlbook\n"
        f"exp = mlbook.Experiment({versions!r}, base={base!r}, grid={grid!r})\n"
        "exp.train(print)\n"
    )
    try:
        expected = Experiment(versions, base=base, grid=grid)
    except ExperimentError as exc:
        with pytest.raises(ExperimentError) as caught:
            read_experiment(source, "E1.py")
        assert str(caught.value) == f"E1.py:2: {exc}"
        return
    got = read_experiment(source, "E1.py").experiment
    assert {k: v.to_dict() for k, v in got.versions.items()} == {
        k: v.to_dict() for k, v in expected.versions.items()
    }


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (
            'exp = mlbook.Experiment(versions={f"w{w}": {"w": w} for w in (8, 16)})',
            "line 2: {f'w{w}': {'w': w} for w in (8, 16)} is computed, not a literal",
        ),
        (
            "LR = 0.1\nLR = 0.2\nexp = mlbook.Experiment(base={'lr': LR})",
            "line 4: LR is not a name assigned a literal once",
        ),
        (
            "exp = mlbook.Experiment(base={'lr': LR})\nLR = 0.1",
            "line 2: LR is not a name assigned a literal once",
        ),
        (
            "BASE = {'lr': 0.1}\nBASE['lr'] = 0.2\nexp = mlbook.Experiment(base=BASE)",
            "line 3: BASE (line 2) is used elsewhere and could be changed",
        ),
        (
            "import os\nexp = mlbook.Experiment(base={'n': os.cpu_count()})",
            "line 3: os.cpu_count() is computed, not a literal",
        ),
        (
            "exp = mlbook.Experiment(versions={'a': {}})\nexp.versions['b'] = {}",
            "line 3: 'exp' is used at the top level other than to register a hook",
        ),
        (
            "exp = mlbook.Experiment()\nfor hook in ('train',):\n    getattr(exp, hook)(print)",
            "line 4: 'exp' is used at the top level other than to register a hook",
        ),
        (
            "from common import make\nexp = make()",
            "no mlbook.Experiment(...) call in the source",
        ),
        (
            "a = mlbook.Experiment()\nb = mlbook.Experiment()",
            "2 mlbook.Experiment(...) calls (lines 2, 3)",
        ),
        (
            "LR = 0.1\nfrom common import *\nexp = mlbook.Experiment(base={'lr': LR})",
            "a star import (from x import *) may rebind any name",
        ),
        (
            "KW = {}\nexp = mlbook.Experiment(**KW)",
            "line 3: Experiment(**...) is computed",
        ),
        (
            "exp = mlbook.Experiment(grid={'lr': 5})",
            "line 2: Experiment(...) fails: 'int' object is not iterable",
        ),
        (
            "exp = mlbook.Experiment()\nif True:\n    exp.train(print)",
            "line 4: 'exp' is used at the top level other than to register a hook",
        ),
    ],
)
def test_not_static_says_why(body: str, why: str) -> None:
    assert why in not_static(f"import mlbook\n{body}\nexp.train(print)\n")
    no_train = "import mlbook\nexp = mlbook.Experiment()\nexp.model(print)\n"
    assert not_static(no_train) == "no @exp.train at the top level of the script"


def test_bad_literals_are_the_scripts_error() -> None:
    with pytest.raises(ExperimentError, match=r"^Models/E1_a.py:2: version name 'a b'"):
        static("import mlbook\nexp = mlbook.Experiment(versions={'a b': {}})\nexp.train(print)\n")


# -- the child fallback and its cache -------------------------------------------------------

COMPUTED = """
    import mlbook
    from common.grid import WIDTHS

    print("noise on stdout while importing")
    exp = mlbook.Experiment(
        versions={f"w{w}": {"width": w, "clip": float("nan")} for w in WIDTHS}, title="computed"
    )

    @exp.train
    def train(run):
        return {}
"""


def test_computed_versions_are_read_in_a_child_and_cached(project: Project) -> None:
    write(project, "common/grid.py", "WIDTHS = (8, 16)\n")
    write(project, "E1_a.py", COMPUTED)
    first = read(project, "E1")
    assert first.read == "child"
    assert first.why.startswith("line 7: {f'w{w}': {'width': w, 'clip': float('nan')} for")
    assert list(first.versions) == ["w8", "w16"] and first.title == "computed"
    assert math.isnan(first.versions["w8"]["clip"])  # msgpack keeps nan
    assert first.hooks == ("train",)
    assert "common.grid" not in sys.modules and not any(
        m.startswith("_mlbook_script_") for m in sys.modules
    )
    again = read(project, "E1")
    assert again.read == "cache" and again.why == first.why
    assert list(again.versions) == ["w8", "w16"]
    (cached,) = (project.state_dir / "cache" / "plans").iterdir()
    # an edit to a file the script imports is seen
    write(project, "common/grid.py", "WIDTHS = (4,)\n")
    changed = read(project, "E1")
    assert changed.read == "child" and list(changed.versions) == ["w4"]
    assert read(project, "E1").read == "cache"
    # a damaged cache file is a miss, not an error
    cached.write_bytes(b"\x00garbage")
    assert read(project, "E1").read == "child"


def test_files_read_while_importing_are_cache_dependencies(project: Project) -> None:
    (project.models_dir / "versions.json").write_text('{"a": {"n": 1}}')
    write(
        project,
        "E1_a.py",
        """
        import json
        import mlbook
        with open("versions.json") as f:  # cwd is Models/, as in the runner's child
            exp = mlbook.Experiment(versions=json.load(f))
        exp.train(print)
        """,
    )
    assert read(project, "E1").versions == {"a": {"n": 1}}
    assert read(project, "E1").read == "cache"
    (project.models_dir / "versions.json").write_text('{"b": {"n": 2}}')
    assert read(project, "E1").versions == {"b": {"n": 2}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "import mlbook\nexp = mlbook.Experiment(versions=dict.fromkeys('ab', {}))\n"
            "raise RuntimeError('nope')\n",
            "Models/E1_a.py:3: the script failed to import: RuntimeError: nope",
        ),
        (
            "import sys\nimport mlbook\nexp = mlbook.Experiment(versions=dict.fromkeys('ab', {}))\n"
            "sys.exit(7)\n",
            "Models/E1_a.py: the script called sys.exit(7) while being imported to read its "
            'versions; keep it under `if __name__ == "__main__":`',
        ),
        (
            "import os\nimport mlbook\nprint('bye')\nos._exit(7)\nexp = mlbook.Experiment()\n",
            "Models/E1_a.py: the script exited with code 7 while being imported to read its "
            "versions (last output: bye)",
        ),
        (
            "import mlbook\nexp = mlbook.Experiment(versions=dict.fromkeys('ab', {}))\n",
            "Models/E1_a.py: no train hook; decorate a function with @exp.train",
        ),
        (
            "import mlbook\nfrom common import make\nexp = make()\nexp.train(print)\n",
            "Models/E1_a.py: defines no mlbook.Experiment at module level; "
            "expected exactly one (exp = mlbook.Experiment(...))",
        ),
        ("import mlbook\nexp = mlbook.Experiment(\n", "Models/E1_a.py:2: the script failed"),
    ],
)
def test_scripts_that_fail_on_import_are_one_error(
    project: Project, body: str, message: str
) -> None:
    (project.models_dir / "common" / "__init__.py").write_text(  # makes no Experiment
        "class make:\n    def train(self, hook):\n        return hook\n"
    )
    write(project, "E1_a.py", body)
    with pytest.raises(ExperimentError) as caught:
        read(project, "E1")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)
    assert not (project.state_dir / "cache" / "plans").exists()  # errors are not cached


def test_values_msgpack_cannot_hold_are_converted(project: Project) -> None:
    pytest.importorskip("numpy")
    write(
        project,
        "E1_a.py",
        """
        import numpy
        import mlbook
        exp = mlbook.Experiment(
            versions={"a": {"n": numpy.int64(3), "v": numpy.arange(2), "o": object}}
        )
        exp.train(print)
        """,
    )
    assert read(project, "E1").versions == {"a": {"n": 3, "v": [0, 1], "o": "<class 'object'>"}}


def test_read_plan_without_a_project(tmp_path: Path) -> None:
    script = tmp_path / "E1_a.py"
    script.write_text(
        textwrap.dedent(COMPUTED).replace("from common.grid import WIDTHS", "WIDTHS = [2]")
    )
    got = read_plan(script, tmp_path)
    assert got.read == "child" and list(got.versions) == ["w2"]
    with pytest.raises(ExperimentError, match=r"E9.py: cannot be read \(No such file"):
        read_plan(tmp_path / "E9.py", tmp_path)


# -- planning, export and the CLI use it -------------------------------------------------------


def test_runner_plan_reads_without_importing(project: Project) -> None:
    write(project, "common/grid.py", "WIDTHS = (8, 16)\n")
    write(project, "E1_a.py", COMPUTED)
    write(project, "E2_b.py", STATIC_SCRIPTS["plain"])
    planned = plan(project, ["E2", "E1"], skip_versions=[])
    assert [(p.ident, p.version) for p in planned] == [
        ("E2", "small"),
        ("E2", "large"),
        ("E1", "w8"),
        ("E1", "w16"),
    ]
    assert planned[0].params == {
        "lr": 1e-3,
        "epochs": 5,
        "hidden": [64, 64],
        "act": None,
        "width": 16,
    }
    assert planned[0].title == "plain" and planned[0].dataset == "digits"
    with pytest.raises(ExperimentError, match=r"^Models/E2_b.py: unknown version x; versions"):
        plan(project, ["E2"], ["x"])
    assert "common.grid" not in sys.modules


def test_export_settings_come_from_the_plan(project: Project) -> None:
    static_script = write(project, "E2_b.py", STATIC_SCRIPTS["plain"])
    assert script_settings(static_script, project.models_dir) == {
        "dataset": "digits",
        "files": ["labels.txt"],
        "title": "plain",
        "metric": None,
        "goal": "max",
    }
    write(project, "common/grid.py", "WIDTHS = (8,)\n")
    computed = write(project, "E1_a.py", COMPUTED)
    assert script_settings(computed, project.models_dir)["title"] == "computed"
    assert "common.grid" not in sys.modules


def test_ls_lists_reads_and_reports(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project.root)
    write(project, "common/grid.py", "WIDTHS = (8, 16)\n")
    write(project, "E1_a.py", COMPUTED)
    write(project, "E2_b.py", STATIC_SCRIPTS["plain"])
    result = CliRunner().invoke(cli, ["ls"])
    assert result.exit_code == 0, result.output
    assert [line.split()[:3] for line in result.output.splitlines()] == [
        ["id", "script", "versions"],
        ["E1", "Models/E1_a.py", "w8,"],
        ["E2", "Models/E2_b.py", "small,"],
    ]
    result = CliRunner().invoke(cli, ["--debug", "ls", "--format", "json"])
    assert result.exit_code == 0
    notes, _, rest = result.output.partition("\n")
    assert notes == (
        "note: Models/E1_a.py: imported in a child process (cached): line 7: "
        "{f'w{w}': {'width': w, 'clip': float('nan')} for w in WIDTHS} is computed, not a literal"
    )
    rows = json.loads(rest)
    assert rows[1] == {
        "id": "E2",
        "script": "Models/E2_b.py",
        "kind": "experiment",
        "title": "plain",
        "dataset": "digits",
        "hooks": ["model", "predict", "train"],
        "versions": {
            "small": {"lr": 1e-3, "epochs": 5, "hidden": [64, 64], "act": None, "width": 16},
            "large": {"lr": -2.5e-4, "epochs": 5, "hidden": [64, 64], "act": None, "width": 64},
        },
    }
    write(  # a plain script with computed options: run until parse_args, which it never reaches
        project,
        "E3_c.py",
        "import argparse, sys\np = argparse.ArgumentParser()\n"
        "p.add_argument('--n', default=len('ab'))\nsys.exit(7)\np.parse_args()\n",
    )
    result = CliRunner().invoke(cli, ["ls"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[1].split()[:3] == ["E1", "Models/E1_a.py", "w8,"]  # the others still listed
    assert lines[3].startswith("E3  Models/E3_c.py  error: Models/E3_c.py: the script called")


# -- the parent process never imports the user's code, torch or numpy ------------------------

HEAVY = """
    {imports}
    import mlbook
    from common.helpers import WIDTH

    exp = mlbook.Experiment(versions={{"a": {{"w": 1}}}}, title="heavy")

    @exp.train
    def train(run):
        assert numpy.zeros(WIDTH).shape == (WIDTH,)
        return {{"w": float(WIDTH)}}
"""

DUMP = """
import atexit, json, sys
OUT = sys.argv[1]
def dump():
    with open(OUT, "w") as f:
        json.dump(sorted(sys.modules), f)
atexit.register(dump)
from mlbook.cli import main
sys.argv = ["mlbook", *sys.argv[2:]]
main()
"""


@pytest.mark.slow
def test_the_parent_never_imports_user_code(project: Project, tmp_path: Path) -> None:
    heavy = ["numpy", "torch"] if importlib.util.find_spec("torch") else ["numpy"]
    imports = "\n    ".join(f"import {name}" for name in heavy)
    write(project, "common/helpers.py", "WIDTH = 3\n")
    write(project, "E1_heavy.py", HEAVY.format(imports=imports))
    write(
        project,
        "E2_computed.py",
        HEAVY.format(imports=imports).replace('{"a": {"w": 1}}', "{n: {} for n in 'ab'}"),
    )
    for args in (["ls"], ["run", "E1", "--mode", "test"], ["run", "E1", "E2", "-q"]):
        out = tmp_path / "modules.json"
        done = subprocess.run(
            [sys.executable, "-c", DUMP, str(out), *args],
            cwd=project.root,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        modules = set(json.loads(out.read_text()))
        leaked = {m.partition(".")[0] for m in modules} & {*heavy, "common"}
        assert not leaked, f"mlbook {' '.join(args)} imported {sorted(leaked)}"
        assert not [m for m in modules if m.startswith("_mlbook_script_")]
        assert "mlbook.experiments.static" in modules  # it did plan
