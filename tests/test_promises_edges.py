"""The rough edges a new user hit: run-ID prefixes everywhere, the journal title of a
script not made by `mlbook new`, and the packages a run really imported."""

from __future__ import annotations

import subprocess
from pathlib import Path

from click.testing import CliRunner

from mlbook.cli import cli
from mlbook.experiments.query import get_run
from mlbook.experiments.runner import run_experiments
from mlbook.project import Project
from mlbook.provenance.journal import add_entry, read_journal

SCRIPT = '''"""Written by hand, not by `mlbook new`."""
import mlbook

exp = mlbook.Experiment(title="Pixels by hand", seed=1, versions={"a": {"k": 1}, "b": {"k": 2}})


@exp.train
def train(run):
    from PIL import Image  # a lazy import: Pillow is the run's package

    (run.dir / "result.txt").write_text(f"k {run.params.k}\\n")
    return {"acc": run.params.k / 10, "size": Image.new("L", (2, 3)).size[1]}
'''


def invoke(project: Project, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["-C", str(project.root), *args], prog_name="mlbook")
    return result.exit_code, result.stdout, result.stderr


def ran(project: Project) -> tuple[str, str]:
    (project.models_dir / "E001_pixels.py").write_text(SCRIPT)
    subprocess.run(["git", "add", "-A"], cwd=project.root, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "start"], cwd=project.root, check=True)
    result = run_experiments(project, ["E001"])
    assert result.ok, [r.error for r in result.runs]
    a, b = (r.run_id for r in result.runs)
    return a, b


def test_a_run_id_prefix_works_wherever_a_run_is_named(project: Project, tmp_path: Path) -> None:
    a, b = ran(project)
    prefix_a, prefix_b = a[:-2], b[:-2]
    code, out, err = invoke(project, "show", prefix_a)
    assert code == 0 and a in out, err
    code, out, err = invoke(project, "diff", prefix_a, prefix_b)
    assert code == 0 and out.startswith(f"{a} → {b}\n"), err
    code, out, err = invoke(project, "checkout", prefix_a, str(tmp_path / "before"))
    assert code == 0 and out.startswith(f"wrote {prefix_a} ("), err
    assert (tmp_path / "before" / "Models" / "E001_pixels.py").read_text() == SCRIPT
    code, out, err = invoke(project, "checkout", prefix_b, "--after", str(tmp_path / "after"))
    assert code == 0, err
    record = get_run(project, b)
    assert (tmp_path / "after" / record.outputs / "result.txt").read_text() == "k 2\n"
    common = a[: len(a) - len(a.split("-")[-1])]  # the date part both IDs share
    code, out, err = invoke(project, "checkout", common[:8], str(tmp_path / "x"))
    assert (code, out) == (1, "")
    assert err == f"error: run ID prefix {common[:8]!r} is ambiguous; give more characters\n"


def test_the_journal_takes_the_title_from_the_experiment(project: Project) -> None:
    ran(project)
    (entry,) = read_journal(project.journal_path)
    assert (entry.id, entry.title) == ("E001", "Pixels by hand")
    assert len(entry.steps) == 2
    assert "## [E001] Pixels by hand\n" in project.journal_path.read_text()


def test_an_untitled_entry_gets_the_title_and_a_written_one_is_kept(project: Project) -> None:
    add_entry(project.journal_path, "E001", "")
    add_entry(project.journal_path, "E002", "My own words")
    ran(project)
    (project.models_dir / "E002_pixels.py").write_text(SCRIPT)
    assert run_experiments(project, ["E002"]).ok
    titles = {e.id: e.title for e in read_journal(project.journal_path)}
    assert titles == {"E001": "Pixels by hand", "E002": "My own words"}


def test_package_versions_are_the_childs_own_modules(project: Project) -> None:
    import rich  # noqa: F401 - loaded in the runner's process, never in the run's

    a, _ = ran(project)
    packages = get_run(project, a).packages or {}
    names = {name.lower() for name in packages}
    assert "pillow" in names  # imported lazily inside train, at the end of the run
    assert "msgspec" in names  # mlbook's own dependency, loaded by the child
    # the runner here is pytest with rich, hypothesis and click loaded: none of them ran
    assert not names & {"pytest", "hypothesis", "rich", "click", "torch", "numpy"}
