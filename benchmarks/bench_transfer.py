"""Runs that travel (issue 20): pack and unpack 1,000 runs, and import 1,000 MLflow runs.

Run: .venv/bin/python benchmarks/bench_transfer.py [--runs 1000] [--steps 1000] [--repeat 3]
     [--mlflow-seed 10] [--skip-mlflow]

Pack/unpack: project A (a real git repository) gets ``--runs`` finished runs
written through the store's own API, each with 3 metrics of ``--steps`` points
in chunks of 250 (as the runner writes them, about 12 bytes a point), final
metrics, two small output files, a used file, and hidden refs before/after (the
after commits made with ``git fast-import``). Timed, as library calls:
``pack_runs`` (default ``--outputs small``) and ``unpack`` into a fresh clone B
(empty store), then ``unpack`` of the same pack again (everything is already
there). Medians of ``--repeat``; B is cloned anew for every unpack.

MLflow: a SQL store (``sqlite``) is made by MLflow itself: ``--mlflow-seed`` runs
through ``MlflowClient`` (``create_run`` + ``log_batch`` of 3 x ``--steps`` metrics +
params + tags + ``set_terminated``), then cloned in SQL with new run ids to
``--runs`` runs (rows of runs, params, tags, metrics, latest_metrics), as
bench_runs_query.py does. Timed: ``import_mlflow`` into a fresh project (every
run, series, params, tags; no artifacts), beside MLflow's own
``mlflow.search_runs`` over the same store (runs, params, final metrics, tags as a
DataFrame; no series) in the peer venv, and MLflow reading the series the way
its client offers (``get_metric_history`` per run and key), timed on 20 runs and
scaled. Targets (issue 20): pack and unpack each <= 5 s; the import <= 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, mlflow_bin, time_call

os.environ.setdefault("GIT_AUTHOR_NAME", "bench")
os.environ.setdefault("GIT_AUTHOR_EMAIL", "bench@mlbook.invalid")
os.environ.setdefault("GIT_COMMITTER_NAME", "bench")
os.environ.setdefault("GIT_COMMITTER_EMAIL", "bench@mlbook.invalid")


def git(cwd: Path, *args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, check=True)
    return done.stdout.decode()


def make_project(root: Path, count: int, steps: int) -> list[str]:
    """Project A with ``count`` finished runs, their outputs and hidden refs."""
    from mlbook.experiments.series import chunk_of
    from mlbook.experiments.store import Store
    from mlbook.project import Project
    from mlbook.scaffold import init_project

    init_project(root)
    project = Project.open(root)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "start")
    head = git(root, "rev-parse", "HEAD").strip()
    rng = random.Random(0)
    ids: list[str] = []
    start = time.time() - count * 10
    with Store.for_project(project) as store:
        store.ensure_experiment("E001", "Models/E001_bench.py", "bench")
        for i in range(count):
            version = f"v{i % 4}"
            run_id = f"20261201-{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}-{i:06x}"
            outputs = project.outputs_dir / "E001" / version / run_id
            pk, _ = store.create_run(
                experiment="E001",
                version=version,
                mode="run",
                params={"lr": 0.001 * (i % 10 + 1), "width": 16 * (i % 4 + 1)},
                outputs=project.relative(outputs),
                run_id=run_id,
            )
            store.start_attempt(pk, 1, host="bench", pid=1)
            t0 = start + i * 10
            chunks = []
            for key in ("loss", "acc", "lr"):
                values = [rng.random() for _ in range(steps)]
                for first in range(0, steps, 250):
                    points = range(first, min(first + 250, steps))
                    chunk = chunk_of(
                        key,
                        list(points),
                        values[first : first + 250],
                        [t0 + s * 0.01 for s in points],
                    )
                    assert chunk is not None
                    chunks.append(chunk)
            store.add_metrics(pk, chunks, attempt=1, seq=1)
            outputs.mkdir(parents=True)
            (outputs / "output.log").write_text(f"run {i}\n" * 20)
            (outputs / "result.json").write_text(json.dumps({"acc": rng.random()}))
            store.add_artifact(
                run_id, project.relative(outputs / "result.json"), 20, "0" * 64, "file"
            )
            store.add_files(run_id, [("Models/E001_bench.py", 100, "1" * 64)])
            store.set_provenance(run_id, commit_before=head, python="3.11")
            store.finish_run(run_id, "completed", {"acc": rng.random(), "loss": rng.random()})
            ids.append(run_id)
    # one after commit per run (a result file on top of HEAD), refs in one go
    stream = []
    for n, run_id in enumerate(ids, 1):
        body = f"result {n}\n".encode()
        stream.append(
            f"commit refs/mlbook/runs/{run_id}/after\nmark :{n}\n"
            f"committer bench <bench@mlbook.invalid> {int(start) + n} +0000\n"
            f"data 7\nresults\nfrom {head}\nM 644 inline result.txt\ndata {len(body)}\n".encode()
            + body
            + b"\n"
        )
    git(root, "fast-import", "--quiet", stdin=b"".join(stream))
    updates = "".join(f"create refs/mlbook/runs/{i}/before {head}\n" for i in ids)
    git(root, "update-ref", "--stdin", stdin=updates.encode())
    listed = git(root, "for-each-ref", "--format=%(objectname) %(refname)", "refs/mlbook/runs")
    afters = {
        ref.split("/")[3]: commit
        for commit, ref in (line.split(" ") for line in listed.splitlines())
        if ref.endswith("/after")
    }
    with Store.for_project(project) as store, store.transaction() as db:
        db.executemany(
            "UPDATE runs SET commit_after = ? WHERE id = ?",
            [(afters[run_id], run_id) for run_id in ids],
        )
    return ids


def bench_pack(args: argparse.Namespace, base: Path) -> None:
    from mlbook.project import Project
    from mlbook.transfer.pack import pack_runs
    from mlbook.transfer.unpack import unpack

    a_root = base / "a"
    made = time.perf_counter()
    ids = make_project(a_root, args.runs, args.steps)
    took = time.perf_counter() - made
    print(f"made {len(ids)} runs x 3 metrics x {args.steps} steps in {took:.0f} s")
    a = Project.open(a_root)
    pack = base / "runs.mlbook"
    pack_times = time_call(lambda: pack_runs(a, output=pack), args.repeat)
    result = pack_runs(a, output=pack)
    print(
        f"pack: {len(result.runs)} runs, {result.outputs} output files, {result.refs} refs, "
        f"{result.size / 1e6:.1f} MB"
    )
    unpack_times, again_times = [], []
    for n in range(args.repeat):
        b_root = base / f"b{n}"
        git(base, "clone", "-q", str(a_root), str(b_root))
        b = Project.open(b_root)
        started = time.perf_counter()
        first = unpack(b, pack, trust=True)
        unpack_times.append(time.perf_counter() - started)
        assert len(first.added) == len(ids), first
        started = time.perf_counter()
        again = unpack(b, pack, trust=True)
        again_times.append(time.perf_counter() - started)
        assert again.added == [] and len(again.present) == len(ids)
        shutil.rmtree(b_root)
    pack_s, unpack_s, again_s = median(pack_times), median(unpack_times), median(again_times)
    print(f"{'pack_runs (1 file, signed)':<40} {pack_s:>8.2f} s")
    print(f"{'unpack into a fresh clone':<40} {unpack_s:>8.2f} s")
    print(f"{'unpack again (all present)':<40} {again_s:>8.2f} s")
    ok = pack_s <= 5 and unpack_s <= 5
    print(f"target pack and unpack each <= 5 s: {'met' if ok else 'NOT met'}")


MLFLOW = """
import json, logging, os, random, sqlite3, sys, time, uuid
logging.disable(logging.WARNING)
import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

path, total, seed, steps, repeat = sys.argv[1], *map(int, sys.argv[2:6])
uri = f"sqlite:///{path}"
mlflow.set_tracking_uri(uri)
client = MlflowClient()
exp = client.create_experiment("bench")
rng = random.Random(0)
start = time.perf_counter()
for i in range(seed):
    run = client.create_run(exp, run_name=f"seed-{i}")
    now = int(time.time() * 1000)
    keys = ("loss", "acc", "lr")
    metrics = [Metric(k, rng.random(), now + s * 10, s) for k in keys for s in range(steps)]
    for at in range(0, len(metrics), 1000):
        client.log_batch(run.info.run_id, metrics=metrics[at:at + 1000])
    params = [Param("lr", "0.001"), Param("width", str(16 * (i % 4 + 1)))]
    client.log_batch(run.info.run_id, params=params, tags=[RunTag("team", "bench")])
    client.set_terminated(run.info.run_id)
per_run = (time.perf_counter() - start) / seed
db = sqlite3.connect(path)
seeds = [r[0] for r in db.execute("SELECT run_uuid FROM runs")]
tables = ["runs", "params", "tags", "metrics", "latest_metrics"]
columns = {t: [c[1] for c in db.execute(f"PRAGMA table_info({t})")] for t in tables}
rows = {t: db.execute(f"SELECT * FROM {t}").fetchall() for t in tables}
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
if os.environ.get("BENCH_ONLY_MAKE"):
    print(json.dumps({"runs": count, "per_run_create": per_run}))
    sys.exit(0)
"""

SEARCH = """
import json, logging, sys, time
logging.disable(logging.WARNING)
import mlflow
from mlflow.tracking import MlflowClient
uri, repeat = sys.argv[1], int(sys.argv[2])
mlflow.set_tracking_uri(uri)
client = MlflowClient()
exp = client.get_experiment_by_name("bench").experiment_id
times = []
for _ in range(repeat):
    t = time.perf_counter()
    frame = mlflow.search_runs(experiment_ids=[exp], max_results=100000)
    times.append(time.perf_counter() - t)
runs = client.search_runs([exp], max_results=20)
t = time.perf_counter()
points = 0
for run in runs:
    for key in run.data.metrics:
        points += len(client.get_metric_history(run.info.run_id, key))
history = time.perf_counter() - t
print(json.dumps({"runs": len(frame), "search": times, "history20": history, "points20": points}))
"""


def bench_mlflow(args: argparse.Namespace, base: Path) -> None:
    from mlbook.scaffold import init_project
    from mlbook.transfer.mlflow_import import import_mlflow

    store = base / "mlflow.db"
    made = time.perf_counter()
    out = subprocess.run(
        [
            str(mlflow_bin()),
            "-c",
            textwrap.dedent(MLFLOW),
            str(store),
            str(args.runs),
            str(args.mlflow_seed),
            str(args.steps),
            str(args.repeat),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_ONLY_MAKE": "1"},
    )
    if out.returncode != 0:
        sys.exit(out.stderr[-3000:])
    info = json.loads(out.stdout.splitlines()[-1])
    print(
        f"MLflow store: {info['runs']} runs x 3 metrics x {args.steps} steps ({args.mlflow_seed} "
        f"through MlflowClient at {info['per_run_create']:.2f} s each, the rest cloned in SQL; "
        f"{time.perf_counter() - made:.0f} s)"
    )
    uri = f"sqlite:///{store}"
    times = []
    for n in range(args.repeat):
        project = init_project(base / f"imported{n}").project
        started = time.perf_counter()
        result = import_mlflow(project, uri, artifacts=True)
        times.append(time.perf_counter() - started)
        assert len(result.added) == args.runs, result
    search = subprocess.run(
        [str(mlflow_bin()), "-c", textwrap.dedent(SEARCH), uri, str(args.repeat)],
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(search.stdout.splitlines()[-1])
    ours, theirs = median(times), median(found["search"])
    history = found["history20"] / 20 * args.runs
    print(f"{'import_mlflow (runs, series, params, tags)':<48} {ours:>8.2f} s")
    print(f"{'mlflow.search_runs (runs, no series)':<48} {theirs:>8.2f} s")
    print(
        f"{'MlflowClient.get_metric_history, 20 runs x 3':<48} {found['history20']:>8.2f} s"
        f"  (x{args.runs // 20}: {history:.0f} s)"
    )
    print(
        f"import / search_runs = {ours / theirs:.1f}x; target import <= 30 s: "
        f"{'met' if ours <= 30 else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mlflow-seed", type=int, default=10)
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--skip-pack", action="store_true")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    try:
        if not args.skip_pack:
            bench_pack(args, base)
        if not args.skip_mlflow:
            bench_mlflow(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
