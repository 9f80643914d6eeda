"""The index through the CLI, and runs that train on saved views (store, show, diff)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import script
from test_dataset_index import count_of, make_records, write_dataset

from mlbook.cli import cli
from mlbook.datasets import Record, open_dataset
from mlbook.datasets.index import index_state, save_view
from mlbook.experiments.query import get_run, run_files, run_views
from mlbook.experiments.runner import run_experiments
from mlbook.experiments.store import Store
from mlbook.project import Project
from mlbook.provenance.diff import diff_runs, run_side


@pytest.fixture
def coco(tmp_path: Path) -> tuple[Path, list[Record]]:
    records = make_records(400, seed=7)
    return write_dataset(tmp_path / "coco", records), records


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_query_formats(coco: tuple[Path, list[Record]]) -> None:
    root, records = coco
    text = "split = train and has(car) and min_box_side < 32"
    expected = [
        r.id
        for r in records
        if r.split == "train"
        and count_of(r, "car")
        and any(min(b.width, b.height) < 32 for b in r.boxes)
    ]
    assert expected
    code, out, _ = invoke("data", "query", str(root), text, "--count", "-q")
    assert (code, out) == (0, f"{len(expected)}\n")
    code, out, _ = invoke("data", "query", str(root), text, "--format", "ids", "--limit", "0")
    assert (code, out.split()) == (0, expected)
    code, out, _ = invoke("data", "query", str(root), text, "--format", "json", "--limit", "3")
    found = json.loads(out)
    assert [r["id"] for r in found] == expected[:3] and "boxes" in found[0]
    code, out, _ = invoke("data", "query", str(root), text, "--format", "csv", "--limit", "2")
    lines = out.splitlines()
    assert lines[0] == "id,file,split,width,height,boxes,labels" and len(lines) == 3
    code, out, _ = invoke("data", "query", str(root), text, "--limit", "5")
    assert code == 0 and f"{len(expected)} record(s) match (showing 1-5)" in out
    assert expected[0] in out
    code, out, _ = invoke(
        "data", "query", str(root), "--sql", "SELECT count(*) AS n FROM boxes", "--format", "json"
    )
    assert json.loads(out) == [{"n": sum(len(r.boxes) for r in records)}]


def test_query_errors_are_one_line(coco: tuple[Path, list[Record]]) -> None:
    root, records = coco
    code, _, err = invoke("data", "query", str(root), "split = train and count(car) >= x")
    assert (code, err) == (1, "error: col 33: expected a whole number after '>=', got 'x'\n")
    nowhere = root.parent / "nowhere"
    code, _, err = invoke("data", "query", str(nowhere), "has(car)")
    expected = f"error: {nowhere}: not a dataset directory; expected records.jsonl in it\n"
    assert (code, err) == (1, expected)
    code, _, err = invoke("data", "query", str(root), "--sql", "DELETE FROM records")
    assert code == 1 and err.startswith("error: --sql runs read-only statements")
    write_dataset(root, records[:10])
    code, _, err = invoke("data", "index", str(root), "--status")
    assert code == 1 and "stale (records.jsonl changed)" in _ + err
    code, _, err = invoke("data", "query", str(root), "has(car)", "--no-rebuild")
    assert code == 1 and "is stale (records.jsonl changed); run without --no-rebuild" in err
    code, out, _ = invoke("data", "index", str(root), "-q")
    assert code == 0 and out.startswith("built ") and index_state(root).fresh


def test_views_and_stats_from_the_cli(coco: tuple[Path, list[Record]]) -> None:
    root, records = coco
    code, out, _ = invoke("data", "view", "save", str(root), "cars", "has(car)", "-q")
    cars = [r for r in records if count_of(r, "car")]
    assert code == 0 and out.startswith(f"saved view 'cars': {len(cars)} record(s)")
    assert json.loads((root / "views" / "cars.json").read_text())["count"] == len(cars)
    code, out, _ = invoke("data", "view", "list", str(root))
    assert code == 0 and "cars" in out and "has(car)" in out
    code, out, _ = invoke("data", "view", "show", str(root), "cars")
    assert code == 0 and out.endswith("unchanged\n")
    code, out, _ = invoke("data", "stats", str(root), "--view", "cars", "--format", "json")
    assert code == 0 and json.loads(out)["records"] == len(cars)
    code, out, _ = invoke("data", "query", str(root), "--view", "cars", "--count")
    assert out == f"{len(cars)}\n"
    code, _, err = invoke("data", "view", "show", str(root), "bikes")
    assert code == 1 and err == f"error: {root}: no view 'bikes'; views: cars\n"


@pytest.mark.slow
def test_data_sql_with_duckdb(coco: tuple[Path, list[Record]]) -> None:
    pytest.importorskip("duckdb")
    root, records = coco
    code, out, _ = invoke(
        "data",
        "sql",
        str(root),
        "SELECT split, count(*) AS n FROM records GROUP BY split ORDER BY split NULLS FIRST",
        "--format",
        "json",
    )
    assert code == 0
    counts: dict[str | None, int] = {}
    for r in records:
        counts[r.split] = counts.get(r.split, 0) + 1
    assert {row["split"]: row["n"] for row in json.loads(out)} == counts
    code, _, err = invoke("data", "sql", str(root), "DROP TABLE records")
    assert code == 1 and "read statements only" in err


TRAIN_ON_VIEW = """
import mlbook
exp = mlbook.Experiment(dataset="tiny", view="cars")

@exp.train
def train(run):
    return {"n": len(run.data("train")), "all": len(run.data())}
"""

TRAIN_WITH_DATA_VIEW = """
import mlbook
exp = mlbook.Experiment(dataset="tiny")

@exp.train
def train(run):
    return {"n": len(run.data("val", view="dogs")), "everything": len(run.data())}
"""


def test_runs_record_the_views_they_train_on(project: Project) -> None:
    records = make_records(200, seed=11)
    root = write_dataset(project.datasets_dir / "tiny", records, mark=False)
    save_view(root, "cars", "has(car)")
    save_view(root, "dogs", "has(dog)")
    script(project, "E001_view.py", TRAIN_ON_VIEW)
    script(project, "E002_data.py", TRAIN_WITH_DATA_VIEW)
    first = run_experiments(project, ["E001", "E002"]).runs
    assert [r.status for r in first] == ["completed", "completed"]
    cars = [r for r in records if count_of(r, "car")]
    dogs = [r for r in records if count_of(r, "dog")]
    assert first[0].metrics == {"n": sum(r.split == "train" for r in cars), "all": len(cars)}
    assert first[1].metrics == {
        "n": sum(r.split == "val" for r in dogs),
        "everything": len(records),
    }
    (view,) = run_views(project, first[0].run_id)
    assert (view.dataset, view.view, view.query, view.count) == (
        "Datasets/tiny",
        "cars",
        "has(car)",
        len(cars),
    )
    assert view.records_hash == index_state(root).hash
    assert [v.view for v in run_views(project, first[1].run_id)] == ["dogs"]

    code, out, _ = invoke("-C", str(project.root), "show", first[0].run_id)
    assert code == 0
    assert f"view: Datasets/tiny @ cars  ({len(cars)} records, query: has(car))" in out

    # the view changes (a new query), the experiment runs again: diff shows it
    save_view(root, "cars", "has(car) and split = train")
    (second,) = run_experiments(project, ["E001"]).runs
    with Store.for_project(project, readonly=True) as store:
        a, b = get_run(store, first[0].run_id), get_run(store, second.run_id)
        side_a = run_side(a, run_files(store, a.id), project.root, run_views(store, a.id))
        side_b = run_side(b, run_files(store, b.id), project.root, run_views(store, b.id))
    result = diff_runs(project.root, side_a, side_b)
    (change,) = result.views
    assert change.key == "Datasets/tiny@cars"
    assert change.a is not None and change.b is not None
    assert (change.a[0], change.b[0]) == ("has(car)", "has(car) and split = train")
    code, out, _ = invoke("-C", str(project.root), "diff", first[0].run_id, second.run_id)
    assert code == 0
    assert "view Datasets/tiny@cars: query 'has(car)' → 'has(car) and split = train'" in out
    assert open_dataset(root).view("cars").view_use is not None
