"""The SQLite run store and the query layer: schema, migrations, recovery, filters."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlbook.errors import ExperimentError, StoreError
from mlbook.experiments.query import get_run, metric_series, parse_filter, runs
from mlbook.experiments.series import Chunk, chunk_of
from mlbook.experiments.store import SCHEMA_VERSION, Store


def loss(steps: Sequence[int], values: Sequence[float], when: float) -> Chunk:
    chunk = chunk_of("loss", list(steps), list(values), [when] * len(values))
    assert chunk is not None
    return chunk


def make_runs(store: Store, count: int = 4) -> list[str]:
    ids = []
    for index in range(count):
        pk, run_id = store.create_run(
            experiment="E1" if index % 2 else "E2",
            version=f"v{index}",
            mode="run",
            params={"lr": 0.1 * (index + 1), "name": f"n{index}"},
            run_id=f"20260101-00000{index}-abcdef",
        )
        now = time.time()
        store.add_metrics(pk, [loss(range(3), [1.0 / (step + 1) for step in range(3)], now)])
        store.finish_run(
            run_id, "completed" if index < 3 else "failed", {"acc": 0.5 + index / 10}, None
        )
        ids.append(run_id)
    return ids


def test_new_store_is_migrated_and_in_wal(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s" / "runs.sqlite") as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master")}
    assert {"experiments", "runs", "metric_chunks", "artifacts", "run_files"} <= tables


def test_newer_or_broken_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    Store.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="is newer than this mlbook knows"):
        Store.open(path)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"cannot open the run store .*move the file away"):
        Store.open(junk)


def test_processes_racing_to_create_the_store(tmp_path: Path) -> None:
    path = tmp_path / "race.sqlite"
    code = (
        "import sys; from mlbook.experiments.store import Store\n"
        "s = Store.open(sys.argv[1])\n"
        "s.create_run(experiment='E1', version='v', mode='run', params={})\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    with Store.open(path, recover=False) as store:
        assert store.db.execute("SELECT count(*) FROM runs").fetchone()[0] == 4


def test_runs_of_a_dead_runner_become_crashed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with Store.open(tmp_path / "runs.sqlite") as store:
        _, mine = store.create_run(experiment="E1", version="a", mode="run", params={})
        pk, orphan = store.create_run(experiment="E1", version="b", mode="run", params={})
        store.add_metrics(pk, [loss([0], [1.0], 0.0)])
        store.db.execute("UPDATE runs SET runner_pid = ? WHERE id = ?", (dead.pid, orphan))
    with Store.open(tmp_path / "runs.sqlite") as store:
        status = dict(store.db.execute("SELECT id, status FROM runs"))
        assert status == {mine: "running", orphan: "crashed"}
        record = get_run(store, orphan)
        assert metric_series(store, record) == {"loss": [(0, 1.0, 0.0)]}
        assert f"runner (pid {dead.pid}) died" in (record.error or "")


def test_write_guards(tmp_path: Path) -> None:
    with Store.open(tmp_path / "runs.sqlite") as store:
        _, run_id = store.create_run(experiment="E1", version="a", mode="run", params={})
        with pytest.raises(StoreError, match="'running' is not a final status"):
            store.finish_run(run_id, "running")
        with pytest.raises(StoreError, match="unknown field\\(s\\) commit"):
            store.set_provenance(run_id, commit="x")
        store.set_provenance(run_id, commit_reason="not a git repository", packages={"a": "1"})
        store.add_files(run_id, [("Models/E1_a.py", 10, "ab" * 32)])
        record = get_run(store, run_id)
    assert record.commit_reason == "not a git repository" and record.packages == {"a": "1"}


def test_query_filters_sort_and_limit(tmp_path: Path) -> None:
    with Store.open(tmp_path / "runs.sqlite") as store:
        ids = make_runs(store)
        assert [r.id for r in runs(store)] == ids[::-1]
        assert [r.version for r in runs(store, filters=["acc>0.65"])] == ["v3", "v2"]
        assert [r.version for r in runs(store, filters=["params.lr<=0.2"])] == ["v1", "v0"]
        assert [r.version for r in runs(store, filters=["params.name=n2"])] == ["v2"]
        assert [r.version for r in runs(store, filters=["status!=completed"])] == ["v3"]
        assert [r.version for r in runs(store, experiment="E1", status="completed")] == ["v1"]
        assert [r.version for r in runs(store, sort="acc")] == ["v0", "v1", "v2", "v3"]
        assert [r.version for r in runs(store, sort="-params.lr", limit=2)] == ["v3", "v2"]
        assert get_run(store, ids[2][:-2]).id == ids[2]
        with pytest.raises(ExperimentError, match="is ambiguous"):
            get_run(store, "2026")
        with pytest.raises(ExperimentError, match="no run 'zz'; list runs with `mlbook runs`"):
            get_run(store, "zz")


@pytest.mark.parametrize(
    "text", ["acc", "acc>", ">0.9", "acc~0.9", "foo.bar>1", "params.a b=1", "metrics.=3"]
)
def test_bad_filters(text: str) -> None:
    with pytest.raises(ExperimentError, match="filter"):
        parse_filter(text)


@given(
    name=st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True),
    op=st.sampled_from(["=", "==", "!=", "<", "<=", ">", ">="]),
    value=st.floats(allow_nan=False, allow_infinity=False, width=32),
    space=st.sampled_from(["", " "]),
)
def test_filter_parser_roundtrip(name: str, op: str, value: float, space: str) -> None:
    parsed = parse_filter(f"{name}{space}{op}{space}{value!r}")
    assert (parsed.field, parsed.op, parsed.value) == (name, op, value)


def test_to_pandas_and_a_missing_pandas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pandas")  # in the dev extra
    with Store.open(tmp_path / "runs.sqlite") as store:
        make_runs(store, 1)
        found = runs(store)
    frame = found.to_pandas()
    assert list(frame["metrics.acc"]) == [0.5]
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
    with pytest.raises(ExperimentError, match="needs pandas; install it"):
        found.to_pandas()
