"""Seeds the runner owns: applied before the model hook, recorded, and named by `mlbook diff`.

Real runs through the runner (child processes, the store, git snapshots); the
scripts draw from Python's `random`, NumPy and a hash of a string, so a seed
that is not applied, or applied after the model hook, shows as different
numbers between two runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlbook.cli import cli
from mlbook.errors import ExperimentError
from mlbook.experiments.api import Experiment
from mlbook.experiments.query import get_run, run_files
from mlbook.experiments.runner import run_experiments
from mlbook.experiments.seeds import MAX_SEED, check_seed, seed_env
from mlbook.experiments.static import read_experiment
from mlbook.experiments.store import Store
from mlbook.project import Project
from mlbook.provenance.diff import RunSide, diff_runs, likely_cause, run_side

DRAWS = """
    import mlbook

    exp = mlbook.Experiment({arguments})


    @exp.model
    def build(p):
        import random

        import numpy  # imported lazily, after the seed: seeded on import
        return [random.random(), float(numpy.random.rand())]


    @exp.train
    def train(run, model):
        import random

        (run.dir / "seen.json").write_text(repr(dict(run.params)))
        return {{
            "model_random": model[0],
            "model_numpy": model[1],
            "train_random": random.random(),
            "hash": hash("abc") % 100000,
        }}
"""


def write_script(project: Project, arguments: str, name: str = "E001_draws.py") -> Path:
    path = project.models_dir / name
    path.write_text(textwrap.dedent(DRAWS.format(arguments=arguments)))
    return path


def invoke(project: Project, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["-C", str(project.root), *args], prog_name="mlbook")
    return result.exit_code, result.stdout, result.stderr


# -- the seed itself ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [True, "3", 1.5, -1, MAX_SEED + 1, None])
def test_a_seed_that_is_not_an_int_in_range_is_one_line(bad: object) -> None:
    with pytest.raises(ExperimentError) as info:
        check_seed(bad, "Models/E001_x.py")
    message = str(info.value)
    assert message.startswith("Models/E001_x.py: the seed must be an int from 0 to 4294967295")
    assert "\n" not in message


def test_experiment_seed_is_the_seed_param_of_every_version() -> None:
    exp = Experiment(seed=3, versions={"a": {}, "b": {"seed": 9}}, grid={"lr": [1, 2]})
    assert {name: p["seed"] for name, p in exp.versions.items()} == {
        "a-lr=1": 3,
        "a-lr=2": 3,
        "b-lr=1": 9,
        "b-lr=2": 9,
    }
    assert Experiment(seed=0).versions["default"].to_dict() == {"seed": 0}
    with pytest.raises(ExperimentError, match=r"Experiment\(seed=1\) and base seed 2 disagree"):
        Experiment(seed=1, base={"seed": 2})
    with pytest.raises(
        ExperimentError, match=r"Experiment\(seed=\.\.\.\): the seed must be an int"
    ):
        Experiment(seed="x")  # type: ignore[arg-type]
    with pytest.raises(ExperimentError, match=r"goal=\.\.\.\) must be 'max' or 'min', got 'best'"):
        Experiment(metric="acc", goal="best")


def test_the_static_reader_reads_seed_metric_and_goal_literally() -> None:
    source = (
        "import mlbook\nSEED = 5\n"
        'exp = mlbook.Experiment(seed=SEED, metric="acc", goal="min", versions={"a": {}})\n'
        "@exp.train\ndef train(run):\n    pass\n"
    )
    static = read_experiment(source)
    assert static.experiment.versions["a"]["seed"] == 5
    assert (static.experiment.metric, static.experiment.goal) == ("acc", "min")
    with pytest.raises(ExperimentError, match=r"^E1\.py:2: Experiment\(seed=\.\.\.\): the seed"):
        read_experiment(
            'import mlbook\nexp = mlbook.Experiment(seed="x")\n@exp.train\ndef t(run): pass\n',
            "E1.py",
        )


def test_seed_env_fixes_hashing_for_the_child() -> None:
    assert seed_env(None) == {}
    assert seed_env(7) == {"PYTHONHASHSEED": "7", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def test_apply_seed_records_what_it_seeded(tmp_path: Path) -> None:
    """In a fresh interpreter: seeding changes process-wide state (and the import system)."""
    code = textwrap.dedent(
        f"""
        import random, sys
        from pathlib import Path
        from mlbook.experiments.seeds import applied_seed, apply_seed
        apply_seed(3)
        state = apply_seed(12, Path({str(tmp_path / "seed.json")!r}))  # the last one counts
        first = random.random()
        random.seed(12)
        assert random.random() == first and applied_seed() == 12
        assert "numpy" not in sys.modules and state["seeded"] == ["random"]
        import numpy  # seeded as it is imported
        assert numpy.random.rand() == numpy.random.RandomState(12).rand()
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    recorded = json.loads((tmp_path / "seed.json").read_text())
    assert recorded["seed"] == 12 and recorded["seeded"] == ["random", "numpy"]


# -- through the runner -----------------------------------------------------------------------


def test_two_seeded_runs_give_identical_numbers_and_record_the_seed(project: Project) -> None:
    write_script(project, 'seed=5, versions={"a": {}, "b": {"seed": 6}}')
    first = run_experiments(project, ["E001"])
    second = run_experiments(project, ["E001"])
    assert first.ok and second.ok, [r.error for r in (*first.runs, *second.runs)]
    by_version = {r.version: r for r in first.runs}
    again = {r.version: r for r in second.runs}
    assert by_version["a"].metrics == again["a"].metrics  # model hook, train hook and hashing
    assert by_version["b"].metrics == again["b"].metrics
    assert by_version["a"].metrics != by_version["b"].metrics  # another seed, other numbers
    record = get_run(project, by_version["a"].run_id)
    assert record.params == {"seed": 5}
    seeded = json.loads((project.root / record.outputs / "seed.json").read_text())
    assert seeded["seed"] == 5 and seeded["python_hash_seed"] == "5"
    assert seeded["seeded"] == ["random", "numpy"]  # numpy seeded when the hook imported it
    assert "torch" not in (record.packages or {})  # never imported to be seeded


def test_the_config_seed_seeds_scripts_without_one_and_is_recorded(project: Project) -> None:
    toml = project.root / "mlbook.toml"
    toml.write_text(toml.read_text().replace("# seed = 0 ", "seed = 11"))
    assert Project.open(project.root).config.experiments.seed == 11
    write_script(project, "")
    result = run_experiments(Project.open(project.root), ["E001"])
    assert result.ok, [r.error for r in result.runs]
    record = get_run(project, result.runs[0].run_id)
    assert record.params == {"seed": 11}
    assert (project.root / record.outputs / "seen.json").read_text() == "{'seed': 11}"


def test_a_bad_seed_param_stops_before_any_run_with_one_line(project: Project) -> None:
    write_script(project, 'versions={"a": {"seed": "abc"}}')
    with pytest.raises(ExperimentError, match=r"^Models/E001_draws\.py version a: param seed:"):
        run_experiments(project, ["E001"])
    code, out, err = invoke(project, "run", "E001")
    assert code == 1 and out == ""
    assert err.startswith("error: Models/E001_draws.py version a: param seed: the seed must be")
    assert len(err.splitlines()) == 1


def test_diff_names_a_missing_seed_when_only_metrics_differ(project: Project) -> None:
    write_script(project, "")
    first = run_experiments(project, ["E001"])
    second = run_experiments(project, ["E001"])
    assert first.ok and second.ok
    a, b = first.runs[0].run_id, second.runs[0].run_id
    with Store.for_project(project) as store:
        sides = [
            run_side(get_run(store, run), run_files(store, run), project.root) for run in (a, b)
        ]
    result = diff_runs(project.root, *sides)
    assert not result.params and result.data is None and not result.code
    assert result.cause.startswith("no seed: neither run was seeded by the runner; set")
    code, out, _ = invoke(project, "diff", a[:-2], b)  # a prefix is enough
    assert code == 0
    assert out.splitlines()[-1] == (
        "same params, data and code, different metrics: likely " + result.cause
    )


def test_likely_cause_threads_environment_then_nondeterminism() -> None:
    a = RunSide("a", seed=1, threads=4, environment={"host": "h", "torch": "2.1"})
    assert likely_cause(a, RunSide("b", seed=1, threads=1, environment=a.environment)).startswith(
        "different threads: torch used 4 and 1 CPU threads"
    )
    assert likely_cause(a, RunSide("b", seed=1, threads=4, environment={"host": "g"})) == (
        "a different environment: host h → g, torch 2.1 → (none)"
    )
    assert likely_cause(a, RunSide("b", seed=1, threads=4, environment=a.environment)).startswith(
        "nondeterministic ops: both runs had seed 1 and the same threads and environment"
    )
    assert likely_cause(a, RunSide("b", threads=4)).startswith(
        "no seed: run b was not seeded by the runner"
    )


TORCH_MODEL = """
import mlbook

exp = mlbook.Experiment(seed=0)


@exp.model
def build(p):
    import torch  # lazily: the runner seeds torch the moment it is imported

    return torch.nn.Linear(16, 1)


@exp.train
def train(run, model):
    return {"w": float(model.weight.sum())}
"""


@pytest.mark.slow
def test_initial_weights_built_in_the_model_hook_are_the_same(project: Project) -> None:
    pytest.importorskip("torch")
    (project.models_dir / "E001_torch.py").write_text(TORCH_MODEL)
    first = run_experiments(project, ["E001"])
    second = run_experiments(project, ["E001"])
    assert first.ok and second.ok, [r.error for r in (*first.runs, *second.runs)]
    assert first.runs[0].metrics == second.runs[0].metrics
    record = get_run(project, first.runs[0].run_id)
    seeded = json.loads((project.root / record.outputs / "seed.json").read_text())
    assert "torch" in seeded["seeded"]  # (torch imports NumPy: seeded too)
    assert seeded["deterministic"] == "warn_only" and seeded["threads"] >= 1
    assert "torch" in (record.packages or {})


DETERMINISTIC = """
import sys
from mlbook.experiments.seeds import apply_seed

apply_seed(0)
import torch

eager = (torch.are_deterministic_algorithms_enabled(),
         torch.is_deterministic_algorithms_warn_only_enabled())
loaded = "torch._inductor.config" in sys.modules
import torch._inductor.config as inductor

print(eager, loaded, inductor.deterministic)
"""


def test_seeding_torch_makes_it_deterministic_without_loading_inductor() -> None:
    """Inductor's settings (over a second to import) load only when the script loads them,
    and are then deterministic too, as `torch.use_deterministic_algorithms` leaves them."""
    pytest.importorskip("torch")
    done = subprocess.run(
        [sys.executable, "-c", DETERMINISTIC], capture_output=True, text=True, check=True
    )
    assert done.stdout.split("\n")[0] == "(True, True) False True"
