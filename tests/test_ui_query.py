"""The UI's reads: the runs table (columns, filters, sort, keyset paging) and downsampled curves."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlbook.errors import ExperimentError
from mlbook.experiments.curves import curves
from mlbook.experiments.query import metric_series, run_table, table_choices, table_column
from mlbook.experiments.series import chunk_of
from mlbook.experiments.store import Store


def _store(path: Path, count: int = 7) -> Store:
    store = Store.open(path / "runs.sqlite")
    for i in range(count):
        pk, run_id = store.create_run(
            experiment="E1" if i % 2 else "E2",
            version=f"v{i}",
            mode="run",
            params={"lr": [0.1, 0.01, 0.001][i % 3], "opt": "sgd" if i < 4 else "adam"},
            run_id=f"run-{i:02d}",
        )
        steps = list(range(10))
        store.add_metrics(pk, [chunk_of("loss", steps, [10.0 - s - i for s in steps], steps)])
        metrics = {"acc": i / 10} if i != 3 else {"acc": float("nan")}
        store.finish_run(run_id, "completed" if i != 5 else "failed", metrics)
    return store


def _ids(page_rows: list) -> list[str]:
    return [row.id for row in page_rows]


def test_columns_filters_and_sort(tmp_path: Path) -> None:
    with _store(tmp_path) as store:
        page = run_table(
            store,
            columns=["version", "params.lr", "metrics.acc", "last.loss", "min.loss", "duration"],
            filters=["acc>0.35"],
            sort="-acc",
        )
        assert page.total == 3 and page.next is None
        assert _ids(page.rows) == ["run-06", "run-05", "run-04"]
        first = page.rows[0]
        assert first.values["params.lr"] == 0.1 and first.values["metrics.acc"] == 0.6
        assert first.values["last.loss"] == 10.0 - 9 - 6 and first.values["min.loss"] == -5.0
        assert first.values["duration"] >= 0
        assert page.rows[1].status == "failed"
        by_loss = run_table(store, columns=["last.loss"], sort="last.loss")
        assert _ids(by_loss.rows)[0] == "run-06"
        assert table_choices(store).columns()[-3:] == ["last.loss", "min.loss", "max.loss"]
        assert table_choices(store).params == ["lr", "opt"]


@pytest.mark.parametrize("sort", ["-created", "created", "params.lr", "-params.lr", "metrics.acc"])
def test_keyset_pages_cover_every_run_once(tmp_path: Path, sort: str) -> None:
    with _store(tmp_path, 11) as store:
        whole = run_table(store, sort=sort, limit=100)
        seen: list[str] = []
        after = None
        while True:
            page = run_table(store, sort=sort, limit=3, after=after)
            seen += _ids(page.rows)
            if page.next is None:
                break
            after = page.next
        assert seen == _ids(whole.rows) and len(seen) == 11


def test_bad_column_sort_filter_and_cursor(tmp_path: Path) -> None:
    with _store(tmp_path, 1) as store:
        with pytest.raises(ExperimentError, match=r"column 'params\.a b'"):
            run_table(store, columns=["params.a b"])
        with pytest.raises(ExperimentError, match="column 'last\\.'"):
            run_table(store, sort="-last.")
        with pytest.raises(ExperimentError, match="expected NAME OP VALUE"):
            run_table(store, filters=["acc>>1"])
        with pytest.raises(ExperimentError, match="page cursor 'garbage!' is not valid"):
            run_table(store, after="garbage!")
    # the name goes into SQL only as a JSON path of checked characters, never raw
    assert table_column("params.lr").expression == "json_extract(params, '$.\"lr\"')"
    assert table_column("max.x'); DROP TABLE runs; --").args == ("x'); DROP TABLE runs; --",)


def _brute(points: list[tuple[int, float]], low_step: int, span: int, buckets: int) -> dict:
    cells: dict[int, list[float]] = {}
    for step, value in points:
        b = min(max(int((step - low_step) * float(buckets) / float(span)), 0), buckets - 1)
        cells.setdefault(b, []).append(value)
    return {
        b: (
            min([v for v in vs if v == v], default=None),
            max([v for v in vs if v == v], default=None),
        )
        for b, vs in cells.items()
    }


@settings(deadline=None, max_examples=40)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    buckets=st.integers(1, 9),
    stride=st.sampled_from([1, 3]),
    spike=st.integers(0, 10_000),
    nan_at=st.integers(0, 10_000),
)
def test_downsampling_keeps_every_bucket_min_and_max(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[int],
    buckets: int,
    stride: int,
    spike: int,
    nan_at: int,
) -> None:
    path = tmp_path_factory.mktemp("curves")
    total = sum(sizes)
    values = [math.sin(i / 3) for i in range(total)]
    if nan_at % total != spike % total:
        values[nan_at % total] = math.nan
    values[spike % total] = 1e6
    with Store.open(path / "runs.sqlite") as store:
        pk, run_id = store.create_run(experiment="E", version="v", mode="run", params={})
        chunks = []
        at = 0
        for size in sizes:  # chunks of mixed sizes, one with irregular steps
            steps = [stride * (at + i) for i in range(size)]
            if size > 2 and size % 5 == 0:
                steps[1] += 1 if stride == 3 else 0
            chunk = chunk_of("m", steps, values[at : at + size], [100.0 + s for s in steps])
            assert chunk is not None
            chunks.append(chunk)
            at += size
        store.add_metrics(pk, chunks)
        store.finish_run(run_id, "completed")
        [curve] = curves(store, [run_id], ["m"], buckets=buckets)
        points = [(p.step, p.value) for p in metric_series(store, run_id)["m"]]
    assert curve.points == total
    if total <= 2 * buckets:
        assert not curve.downsampled and curve.x == [p[0] for p in points]
        return
    assert curve.low is not None and curve.high is not None
    steps = [p[0] for p in points]
    expected = _brute(points, min(steps), max(steps) - min(steps) + 1, buckets)
    assert sorted(zip(curve.low, curve.high, strict=True), key=str) == sorted(
        expected.values(), key=str
    )
    assert 1e6 in curve.high  # the spike survives
    assert len(curve.x) <= buckets and set(curve.x) <= set(steps)


def test_curves_by_time_and_errors(tmp_path: Path) -> None:
    with Store.open(tmp_path / "runs.sqlite") as store:
        pk, run_id = store.create_run(experiment="E", version="v", mode="run", params={})
        started = store.db.execute("SELECT started FROM runs WHERE pk = ?", (pk,)).fetchone()[0]
        steps = list(range(100))
        store.add_metrics(
            pk,
            [
                chunk_of(
                    "m",
                    steps[i : i + 10],
                    [float(s) for s in steps[i : i + 10]],
                    [started + 2.0 * s for s in steps[i : i + 10]],
                )
                for i in range(0, 100, 10)
            ],
        )
        [curve] = curves(store, [run_id], ["m", "absent"], buckets=20, x="time")
        assert curve.downsampled and len(curve.x) == 20
        assert curve.x[-1] == pytest.approx(198.0, abs=0.01) and curve.y[-1] == 99.0
        assert curves(store, [run_id], ["absent"]) == []
        with pytest.raises(ExperimentError, match="no run 'nope'"):
            curves(store, ["nope"], ["m"])
        with pytest.raises(ExperimentError, match="x axis 'epoch'"):
            curves(store, [run_id], ["m"], x="epoch")  # type: ignore[arg-type]
