"""Metric logging, end to end into the store: mlbook `run.log` against `mlflow.log_metric`.

Run: .venv/bin/python benchmarks/bench_metrics.py [--points 200000] [--repeat 5]
Needs the MLflow peer venv (bash benchmarks/setup_peers.sh).

mlbook: a real experiment run by the real runner (child process, pipe, SQLite
store in WAL). Per point = (wall time of a version logging N points - wall time
of the same version logging 0 points) / N, so spawn and teardown cancel out and
what is left is logging, sending, and committing every point to the store. The
store's row count is checked. The in-loop cost (what the training loop feels)
is reported too.
MLflow: `mlflow.log_metric` inside an active run on a `sqlite:///` store, per call.
Target (issue 4): mlbook >= 500x cheaper per point (about 5 us or less).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _common import median, mlflow_bin

SCRIPT = """
import time
import mlbook

exp = mlbook.Experiment(versions={"n": {"points": POINTS}, "zero": {"points": 0}})

@exp.train
def train(run):
    log = run.log
    start = time.perf_counter()
    for step in range(run.params.points):
        log(step=step, loss=0.5)
    return {"loop_seconds": time.perf_counter() - start}
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


def mlbook_per_point(points: int, repeat: int) -> tuple[float, float]:
    from mlbook.experiments.runner import run_experiments
    from mlbook.project import Project
    from mlbook.scaffold import init_project

    root = Path(tempfile.mkdtemp()) / "bench"
    init_project(root)
    project = Project.open(root)
    (project.models_dir / "E001_log.py").write_text(SCRIPT.replace("POINTS", str(points)))
    per_point, loop = [], []
    store = project.state_dir / "runs.sqlite"
    for _ in range(repeat):
        start = time.perf_counter()
        run_experiments(project, ["E001"], versions=["zero"], observers=[])
        empty = time.perf_counter() - start
        start = time.perf_counter()
        result = run_experiments(project, ["E001"], versions=["n"], observers=[])
        full = time.perf_counter() - start
        (info,) = result.runs
        assert info.status == "completed", info.error
        with sqlite3.connect(store) as db:
            (count,) = db.execute(
                "SELECT count(*) FROM metrics WHERE run = ?", (info.pk,)
            ).fetchone()
        assert count == points, (count, points)
        per_point.append((full - empty) / points)
        loop.append(info.metrics["loop_seconds"] / points)
    return median(per_point), median(loop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--mlflow-points", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    end_to_end, in_loop = mlbook_per_point(args.points, args.repeat)
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
    print(f"{'per metric point':<44} {'median':>10}   (repeat={args.repeat})")
    label = "mlbook run.log, end to end into the store"
    print(f"{label:<44} {end_to_end * 1e6:>8.2f} us   ({args.points} points)")
    print(f"{'mlbook run.log, cost inside the loop':<44} {in_loop * 1e6:>8.2f} us")
    label = "mlflow.log_metric, sqlite:/// store"
    print(f"{label:<44} {mlflow * 1e6:>8.0f} us   ({args.mlflow_points} points)")
    ratio = mlflow / end_to_end
    print(f"mlflow / mlbook (end to end) = {ratio:.0f}x (target >= 500x)")
    print(f"target: {'met' if ratio >= 500 else 'NOT met'}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
