"""Listing and filtering 100,000 runs: `mlbook runs` against MLflow `search_runs`.

Run: .venv/bin/python benchmarks/bench_runs_query.py [--runs 100000] [--mlflow-seed 1000]

mlbook: 100,000 runs are written straight into a real run store (schema v1, one
transaction), each with params and final metrics ``acc`` (uniform 0..1, so
``acc>0.9`` keeps about 10 %) and ``loss``. Timed: the library call
``mlbook.runs(filters=["acc>0.9"])`` returning every match as objects, the same
with the CLI's default ``limit=50``, the full unfiltered listing, and the CLI
`mlbook runs 'acc>0.9'` as a new process (start-up included).

MLflow: creating 100,000 runs through its API costs about 16 ms each (~27
minutes), so ``--mlflow-seed`` runs (default 1,000) are created with
``MlflowClient.create_run`` + ``log_batch`` + ``set_terminated`` and then cloned
in SQL, with new run IDs, into the same number of runs (rows of runs, params,
tags, metrics and latest_metrics). Timed: ``mlflow.search_runs(filter_string=
"metrics.acc > 0.9")`` (every match, as a list) and ``MlflowClient.search_runs``
with ``max_results=50``. Medians of ``--repeat`` calls in one warm process.
Target (issue 4): mlbook listing+filtering 100,000 runs in at most 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, mlflow_bin, time_call, time_command

MLFLOW = """
import json, logging, random, sys, tempfile, time, uuid
logging.disable(logging.WARNING)
import sqlite3
import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

total, seed, repeat = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
path = f"{tempfile.mkdtemp()}/mlflow.db"
mlflow.set_tracking_uri(f"sqlite:///{path}")
client = MlflowClient()
exp = client.create_experiment("bench")
rng = random.Random(0)
start = time.perf_counter()
for i in range(seed):
    run = client.create_run(exp)
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric("acc", rng.random(), now, 0), Metric("loss", rng.random(), now, 0)],
        params=[Param("lr", str(0.001 * (i % 10 + 1))), Param("width", str(16 * (i % 4 + 1)))],
    )
    client.set_terminated(run.info.run_id)
per_run = (time.perf_counter() - start) / seed

db = sqlite3.connect(path)
seeds = [r[0] for r in db.execute("SELECT run_uuid FROM runs")]
tables = ["runs", "params", "tags", "metrics", "latest_metrics"]
columns = {t: [c[1] for c in db.execute(f"PRAGMA table_info({t})")] for t in tables}
rows = {
    t: db.execute(f"SELECT * FROM {t} WHERE run_uuid IN (SELECT run_uuid FROM runs)").fetchall()
    for t in tables
}
with db:
    made = len(seeds)
    while made < total:
        batch = min(len(seeds), total - made)
        chosen = set(seeds[:batch])
        new = {old: uuid.uuid4().hex for old in chosen}
        for t in tables:
            at = columns[t].index("run_uuid")
            marks = ", ".join("?" * len(columns[t]))
            db.executemany(
                f"INSERT INTO {t} VALUES ({marks})",
                [r[:at] + (new[r[at]],) + r[at + 1:] for r in rows[t] if r[at] in chosen],
            )
        made += batch
count = db.execute("SELECT count(*) FROM runs").fetchone()[0]
db.close()

def all_matches():
    return mlflow.search_runs(
        experiment_ids=[exp], filter_string="metrics.acc > 0.9", output_format="list",
        max_results=total,
    )

def first_50():
    return client.search_runs([exp], "metrics.acc > 0.9", max_results=50)

matched = len(all_matches())
times_all, times_50 = [], []
for _ in range(repeat):
    t = time.perf_counter(); all_matches(); times_all.append(time.perf_counter() - t)
    t = time.perf_counter(); first_50(); times_50.append(time.perf_counter() - t)
print(json.dumps({"runs": count, "per_run_create": per_run, "matched": matched,
                  "all": times_all, "first50": times_50}))
"""


def make_store(root: Path, count: int) -> Path:
    from mlbook.experiments.store import Store
    from mlbook.scaffold import init_project

    init_project(root)
    path = root / ".mlbook" / "runs.sqlite"
    rng = random.Random(0)
    now = time.time() - count
    rows = []
    for i in range(count):
        created = now + i
        params = json.dumps({"lr": 0.001 * (i % 10 + 1), "width": 16 * (i % 4 + 1)})
        metrics = json.dumps({"acc": rng.random(), "loss": rng.random()})
        status = "failed" if i % 10 == 0 else "completed"
        rows.append(
            (
                f"r{i:08d}",
                f"E{i % 10:03d}",
                f"v{i % 7}",
                "run",
                status,
                created,
                created,
                created + 30,
                "host",
                params,
                metrics,
            )
        )
    with Store.open(path) as store, store.transaction():
        store.db.executemany(
            "INSERT INTO runs (id, experiment, version, mode, status, created, started, ended,"
            " host, params, metrics) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--mlflow-seed", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()
    import mlbook
    from mlbook.experiments.store import Store

    root = Path(tempfile.mkdtemp()) / "bench"
    path = make_store(root, args.runs)
    with Store.open(path) as store:
        matched = len(mlbook.runs(store, filters=["acc>0.9"]))
        all_matches = median(
            time_call(lambda: mlbook.runs(store, filters=["acc>0.9"]), args.repeat)
        )
        first_50 = median(
            time_call(lambda: mlbook.runs(store, filters=["acc>0.9"], limit=50), args.repeat)
        )
        everything = median(time_call(lambda: mlbook.runs(store), args.repeat))
    cli = shutil.which("mlbook", path=str(Path(sys.executable).parent)) or "mlbook"
    cli_50 = median(time_command([cli, "-C", str(root), "runs", "acc>0.9"], args.repeat))
    cli_all = median(
        time_command(
            [cli, "-C", str(root), "runs", "acc>0.9", "-n", "0", "--format", "csv"], args.repeat
        )
    )
    print(f"{args.runs} runs; acc>0.9 matches {matched}   (medians of {args.repeat})")
    print(f"{'mlbook.runs(filters=[acc>0.9]) all matches':<52} {all_matches * 1000:>8.1f} ms")
    print(f"{'mlbook.runs(filters=[acc>0.9], limit=50)':<52} {first_50 * 1000:>8.1f} ms")
    print(f"{'mlbook.runs() all runs, unfiltered':<52} {everything * 1000:>8.1f} ms")
    print(f"{'`mlbook runs acc>0.9` (new process, 50 rows)':<52} {cli_50 * 1000:>8.1f} ms")
    print(f"{'`mlbook runs acc>0.9 -n 0 --format csv` (process)':<52} {cli_all * 1000:>8.1f} ms")
    print(f"target all matches <= 200 ms: {'met' if all_matches <= 0.2 else 'NOT met'}")
    if args.skip_mlflow:
        return
    out = subprocess.run(
        [
            str(mlflow_bin()),
            "-c",
            textwrap.dedent(MLFLOW),
            str(args.runs),
            str(args.mlflow_seed),
            str(args.repeat),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out.splitlines()[-1])
    mlf_all, mlf_50 = median(result["all"]), median(result["first50"])
    print(
        f"MLflow: {result['runs']} runs ({args.mlflow_seed} created through the API at "
        f"{result['per_run_create'] * 1000:.1f} ms each, the rest cloned in SQL); "
        f"matches {result['matched']}"
    )
    print(f"{'mlflow.search_runs(metrics.acc > 0.9) all matches':<52} {mlf_all * 1000:>8.1f} ms")
    print(f"{'MlflowClient.search_runs(..., max_results=50)':<52} {mlf_50 * 1000:>8.1f} ms")
    print(
        f"MLflow / mlbook, all matches: {mlf_all / all_matches:.0f}x; "
        f"first 50: {mlf_50 / first_50:.0f}x"
    )


if __name__ == "__main__":
    main()
