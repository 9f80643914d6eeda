"""Reading one run's metric series: chunks (schema v3) against one row a point (v2).

Run: .venv/bin/python benchmarks/bench_series_read.py [--steps 100000] [--keys 3] [--repeat 7]

Both stores hold the same run (``--steps`` x ``--keys`` points, among 20 other
runs of the same size, so indexes matter). The v2 layout is rebuilt as it was
(``metrics(run, key, step, value, time)`` indexed by run) and read the way the
old ``metric_series`` read it; the v3 store is read with
``mlbook.experiments.metric_series``. Timed: the whole run's series, and one
key's step range (1,000 steps in the middle). Target (issue 19): as fast as v2.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from pathlib import Path

from _common import median, time_call

_KEYS = ("loss", "acc", "lr", "grad_norm")


def build(root: Path, steps: int, keys: int, runs: int) -> tuple[Path, Path, str]:
    from mlbook.experiments.series import chunk_of
    from mlbook.experiments.store import Store

    old = root / "v2.sqlite"
    db = sqlite3.connect(old)
    db.execute("CREATE TABLE metrics (run INTEGER, key TEXT, step INTEGER, value REAL, time REAL)")
    db.execute("CREATE INDEX metrics_run ON metrics (run)")
    new = root / "runs.sqlite"
    target = ""
    with Store.open(new) as store:
        for run in range(1, runs + 1):
            pk, run_id = store.create_run(experiment="E1", version=f"v{run}", mode="run", params={})
            if run == runs // 2:
                target = run_id
            rows = []
            chunks = []
            for key in _KEYS[:keys]:
                values = [1.0 / (s + 1) for s in range(steps)]
                times = [1.8e9 + s * 0.001 for s in range(steps)]
                rows.extend(
                    (pk, key, s, v, t) for s, v, t in zip(range(steps), values, times, strict=True)
                )
                for first in range(0, steps, 4096):
                    end = min(first + 4096, steps)
                    chunk = chunk_of(key, range(first, end), values[first:end], times[first:end])
                    assert chunk is not None
                    chunks.append(chunk)
            db.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)", rows)
            store.add_metrics(pk, chunks)
    db.commit()
    db.close()
    return old, new, target


def read_old(path: Path, pk: int) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        for key, step, value in db.execute(
            "SELECT key, step, value FROM metrics WHERE run = ? ORDER BY rowid", (pk,)
        ):
            series.setdefault(key, []).append((step, value))
    return series


def range_old(path: Path, pk: int, key: str, start: int, end: int) -> list[tuple[int, float]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute(
            "SELECT step, value FROM metrics WHERE run = ? AND key = ? AND step BETWEEN ? AND ?"
            " ORDER BY rowid",
            (pk, key, start, end),
        ).fetchall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    from mlbook.experiments.query import get_run, metric_series

    root = Path(tempfile.mkdtemp())
    old, new, run_id = build(root, args.steps, args.keys, args.runs)
    record = get_run(new, run_id)
    mid = args.steps // 2
    assert len(read_old(old, record.pk)["loss"]) == len(metric_series(new, record)["loss"])
    whole_old = median(time_call(lambda: read_old(old, record.pk), args.repeat))
    whole_new = median(time_call(lambda: metric_series(new, record), args.repeat))
    part_old = median(
        time_call(lambda: range_old(old, record.pk, "loss", mid, mid + 999), args.repeat)
    )
    part_new = median(
        time_call(
            lambda: metric_series(new, record, ["loss"], start=mid, end=mid + 999), args.repeat
        )
    )
    points = args.steps * args.keys
    size_old, size_new = old.stat().st_size, new.stat().st_size
    total = points * args.runs
    print(f"one run, {points:,} points ({args.runs} runs in the store)     v2 rows    v3 chunks")
    print(f"{'whole series':<44} {whole_old * 1e3:>8.1f} ms {whole_new * 1e3:>8.1f} ms")
    print(f"{'one key, 1,000 steps':<44} {part_old * 1e3:>8.1f} ms {part_new * 1e3:>8.1f} ms")
    print(f"{'store bytes a point':<44} {size_old / total:>8.1f}    {size_new / total:>8.1f}")
    print(
        f"v3 / v2: whole {whole_new / whole_old:.2f}x, range {part_new / part_old:.2f}x "
        "(target: <= 1x, as fast as v2)"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
