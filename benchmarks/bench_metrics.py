"""Metric logging, end to end until durable: mlbook `run.log` against `mlflow.log_metric`.

Run: .venv/bin/python benchmarks/bench_metrics.py [--steps 333334] [--keys 3] [--repeat 3]
Needs the MLflow peer venv (bash benchmarks/setup_peers.sh) for the peer column;
`--no-mlflow` skips it. `--plain` measures `mlbook.log` in a plain script (no
`mlbook.Experiment`, run as it is by the same runner) instead of `run.log`.

mlbook: a real experiment run by the real runner (child process, pipe, SQLite
store in WAL), in a fresh process per measurement. Each step logs ``--keys``
metrics (``run.log(step=i, loss=..., acc=..., lr=...)``) and the run ends with
``run.flush()``, which returns once the runner has committed every point. Per
point = (wall time of a version logging N points - wall time of the same
version logging 0 points) / N, so spawn and teardown cancel out and what is
left is logging, sending and committing. Also reported: the cost inside the
loop, the runner's peak RSS (the process that runs the runner, measured with
getrusage), the store's bytes per point (file size after a checkpoint, minus
the same store with an empty run), and the store's own write rate (pre-packed
chunks through ``Store.add_metrics``).

MLflow: `mlflow.log_metric` inside an active run on a `sqlite:///` store, per call.
Targets (issue 19): <= 2 us a point end to end, runner memory <= 100 MiB whatever
the run length, <= 16 bytes a point, the store writes >= 1,000,000 points/s.
Issue 12: `mlbook.log` in a plain script <= 5 us a point end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _common import median, mlflow_bin

SCRIPT = """
import math, time
import mlbook

exp = mlbook.Experiment(versions={"n": {"steps": STEPS}, "zero": {"steps": 0}})

@exp.train
def train(run):
    log = run.log
    start = time.perf_counter()
    for step in range(run.params.steps):
        log(step=step, KEYS)
    run.flush()
    return {"loop_seconds": time.perf_counter() - start}
"""

PLAIN = """
import argparse, json, time
import mlbook

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=0)
    args = parser.parse_args()
    log = mlbook.log
    start = time.perf_counter()
    for step in range(args.steps):
        log(step=step, KEYS)
    mlbook.current_run().flush()
    with open("loop.json", "w") as handle:  # the run's directory
        json.dump({"loop_seconds": time.perf_counter() - start}, handle)

if __name__ == "__main__":
    main()
"""

MLFLOW = """
import json, sys, tempfile, time, logging
logging.disable(logging.WARNING)
import mlflow
n, repeat = int(sys.argv[1]), int(sys.argv[2])
mlflow.set_tracking_uri(f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
out = []
with mlflow.start_run():
    mlflow.log_metric("warmup", 0.0, step=0)
    for r in range(repeat):
        start = time.perf_counter()
        for step in range(n):
            mlflow.log_metric("loss", 0.5, step=step + r * n)
        out.append((time.perf_counter() - start) / n)
print(json.dumps(out))
"""

_KEY_NAMES = ("loss", "acc", "lr", "grad_norm", "val_loss", "val_acc")


def _store_bytes(path: Path) -> int:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def inner(steps: int, keys: int, version: str, plain: bool = False) -> None:
    """One measurement in this fresh process: prints JSON."""
    from mlbook.experiments.runner import run_experiments
    from mlbook.project import Project
    from mlbook.scaffold import init_project

    root = Path(tempfile.mkdtemp()) / "bench"
    init_project(root)
    project = Project.open(root)
    values = ", ".join(f"{name}=step * {i + 1}e-6" for i, name in enumerate(_KEY_NAMES[:keys]))
    body = (PLAIN if plain else SCRIPT).replace("STEPS", str(steps)).replace("KEYS", values)
    (project.models_dir / "E001_log.py").write_text(body)
    start = time.perf_counter()
    if plain:
        sets = {"steps": steps if version == "n" else 0}
        result = run_experiments(project, ["E001"], sets=sets, observers=[])
    else:
        result = run_experiments(project, ["E001"], versions=[version], observers=[])
    wall = time.perf_counter() - start
    (info,) = result.runs
    assert info.status == "completed", info.error
    if plain:
        info.metrics = json.loads((info.dir / "loop.json").read_text())
    from mlbook.experiments.query import metric_summaries

    counted = sum(s.count for s in metric_summaries(project, info.run_id).values())
    expected = steps * keys if version == "n" else 0
    assert counted == expected, (counted, expected)
    print(
        json.dumps(
            {
                "wall": wall,
                "loop": info.metrics["loop_seconds"],
                "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "store_bytes": _store_bytes(project.state_dir / "runs.sqlite"),
            }
        )
    )


def measure(steps: int, keys: int, version: str, plain: bool = False) -> dict[str, float]:
    argv = [sys.executable, __file__, "--inner", version, "--steps", str(steps)]
    out = subprocess.run(
        [*argv, "--keys", str(keys), *(["--plain"] if plain else [])],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    ).stdout
    result: dict[str, float] = json.loads(out.splitlines()[-1])
    return result


def store_write_rate(points: int, keys: int) -> float:
    """Points per second that Store.add_metrics commits (chunks of 4,096 points)."""
    from mlbook.experiments.series import chunk_of
    from mlbook.experiments.store import Store

    per_key = points // keys
    chunks = []
    for key in _KEY_NAMES[:keys]:
        for first in range(0, per_key, 4096):
            steps = list(range(first, min(first + 4096, per_key)))
            chunk = chunk_of(key, steps, [s * 1e-6 for s in steps], [1.8e9 + s for s in steps])
            assert chunk is not None
            chunks.append(chunk)
    with Store.open(Path(tempfile.mkdtemp()) / "runs.sqlite") as store:
        pk, _ = store.create_run(experiment="E1", version="a", mode="run", params={})
        start = time.perf_counter()
        for index in range(0, len(chunks), keys):  # one transaction a batch, as the runner does
            store.add_metrics(pk, chunks[index : index + keys])
        elapsed = time.perf_counter() - start
    return per_key * keys / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=333_334)
    parser.add_argument("--keys", type=int, default=3)
    parser.add_argument("--long-steps", type=int, default=1_000_000, help="for memory")
    parser.add_argument("--mlflow-points", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--plain", action="store_true", help="mlbook.log in a plain script")
    parser.add_argument("--inner", choices=["n", "zero"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.steps, args.keys, args.inner, args.plain)
        return
    if args.plain:
        plain_main(args.steps, args.keys, args.repeat)
        return
    points = args.steps * args.keys
    per_point, loop, bytes_per_point, rss = [], [], [], []
    for _ in range(args.repeat):
        empty = measure(args.steps, args.keys, "zero")
        full = measure(args.steps, args.keys, "n")
        per_point.append((full["wall"] - empty["wall"]) / points)
        loop.append(full["loop"] / points)
        bytes_per_point.append((full["store_bytes"] - empty["store_bytes"]) / points)
        rss.append(full["rss_mib"])
    long_run = measure(args.long_steps, args.keys, "n")
    rate = median([store_write_rate(points, args.keys) for _ in range(args.repeat)])
    print(f"{'mlbook, ' + str(points) + ' points of ' + str(args.keys) + ' keys':<48} median")
    print(f"{'run.log, end to end until committed':<48} {median(per_point) * 1e6:>8.2f} us/point")
    print(f"{'run.log, cost inside the loop':<48} {median(loop) * 1e6:>8.2f} us/point")
    print(f"{'store size':<48} {median(bytes_per_point):>8.2f} bytes/point")
    print(f"{'runner peak RSS':<48} {median(rss):>8.1f} MiB")
    label = f"runner peak RSS, {args.long_steps * args.keys:,} points"
    print(f"{label:<48} {long_run['rss_mib']:>8.1f} MiB")
    print(f"{'store write rate (Store.add_metrics)':<48} {rate:>8,.0f} points/s")
    met = (
        median(per_point) <= 2e-6
        and median(bytes_per_point) <= 16
        and long_run["rss_mib"] <= 100
        and rate >= 1_000_000
    )
    if not args.no_mlflow:
        out = subprocess.run(
            [
                str(mlflow_bin()),
                "-c",
                textwrap.dedent(MLFLOW),
                str(args.mlflow_points),
                str(args.repeat),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        mlflow = median(json.loads(out.splitlines()[-1]))
        label = "mlflow.log_metric, sqlite:/// store"
        print(f"{label:<48} {mlflow * 1e6:>8.0f} us/point ({args.mlflow_points} points)")
        print(f"mlflow / mlbook (end to end) = {mlflow / median(per_point):,.0f}x")
    print(f"targets (<= 2 us, <= 16 B, <= 100 MiB, >= 1M points/s): {'met' if met else 'NOT met'}")


def plain_main(steps: int, keys: int, repeat: int) -> None:
    """``mlbook.log`` in a plain script, end to end until committed (issue 12: <= 5 us)."""
    points = steps * keys
    per_point, loop = [], []
    for _ in range(repeat):
        empty = measure(steps, keys, "zero", plain=True)
        full = measure(steps, keys, "n", plain=True)
        per_point.append((full["wall"] - empty["wall"]) / points)
        loop.append(full["loop"] / points)
    print(f"{'plain script, ' + str(points) + ' points of ' + str(keys) + ' keys':<48} median")
    label = "mlbook.log, end to end until committed"
    print(f"{label:<48} {median(per_point) * 1e6:>8.2f} us/point")
    print(f"{'mlbook.log, cost inside the loop':<48} {median(loop) * 1e6:>8.2f} us/point")
    print(f"target (<= 5 us end to end): {'met' if median(per_point) <= 5e-6 else 'NOT met'}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
