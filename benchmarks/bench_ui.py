"""`mlbook ui` on 10,000 runs x 3 metrics x 1,000 steps, beside `mlflow ui` on the same runs.

Run: .venv/bin/python benchmarks/bench_ui.py [--runs 10000] [--steps 1000] [--store DIR]
     [--skip-mlflow] [--repeat 7]

mlbook: the store is written with ``Store.add_metrics`` and ``series.chunk_of``
(chunks of 250 points, as a training loop flushing every 0.2 s writes them), plus
20 runs of ``loss`` with 10,000 steps for the chart. ``--store DIR`` keeps the
project in DIR and reuses it next time. The real ``mlbook ui`` serves it in a
child process on a free loopback port. Timed:

- server time (the ``Server-Timing`` header) of the first table page in a fresh
  server, then warm medians of the table, a sort by a final metric, a sort by a
  series summary (``min.loss``), two filters, and ``/api/curves`` for the chart;
- in headless Chromium (Playwright, /usr/bin/chromium): first contentful paint of
  the table page; a click on a sort header until htmx has swapped the table; the
  curves page of 20 runs x 10,000 steps from the request of its data to drawn
  (charts.js writes it into ``data-ms``);
- the server's peak memory (VmHWM) after all of it.

MLflow (benchmarks/.venv-mlflow, `bash benchmarks/setup_peers.sh`): the same
10,000 runs (params, final metrics) and the same 20 long runs with 10,000 steps of
``loss``; 200 runs are created through its API and the rest cloned in SQL with
new ids (as in bench_runs_query.py). Its 10,000 runs carry no 1,000-step series,
which only makes its store smaller. ``mlflow server`` serves it; timed: the
``runs/search`` calls its runs table makes (newest 100; sorted by a metric;
filtered), the metric history of the 20 long runs (full, and the sampled
``get-history-bulk-interval`` its charts use), the first paint of its runs page
(``#/experiments/ID/runs``) and the time until the newest run's name shows, and
the server's memory.

Targets (issue 16): first table page <= 300 ms server time, painted <= 1 s; sort
or filter <= 150 ms; chart of 20 runs x 10k steps <= 500 ms request to drawn;
server memory <= 200 MB.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MLFLOW_VENV, median

CHROMIUM = "/usr/bin/chromium"
LONG_RUNS, LONG_STEPS, CHUNK = 20, 10_000, 250
FIRST_PAINT = """() => new Promise((resolve) => new PerformanceObserver((list) => {
    const paint = list.getEntries().find((e) => e.name === 'first-contentful-paint');
    if (paint) resolve(paint.startTime);
}).observe({type: 'paint', buffered: true}))"""


def make_project(root: Path, runs: int, steps: int) -> list[str]:
    """Write the benchmark project; returns the ids of the 20 long runs."""
    from mlbook.experiments.series import chunk_of
    from mlbook.experiments.store import Store
    from mlbook.scaffold import init_project

    project = init_project(root).project
    rng = random.Random(0)
    long_ids = []
    started = time.perf_counter()
    with Store.for_project(project) as store:
        for i in range(runs + LONG_RUNS):
            long = i >= runs
            count = LONG_STEPS if long else steps
            params = {
                "lr": [0.1, 0.03, 0.01, 0.003, 0.001][i % 5],
                "width": [16, 32, 64, 128][i % 4],
                "opt": ["sgd", "adam"][i % 2],
                "seed": i,
            }
            pk, run_id = store.create_run(
                experiment=f"E{i % 20:03d}",
                version="long" if long else f"v{i % 50}",
                mode="run",
                params=params,
                run_id=f"bench-{i:06d}",
            )
            speed = 0.5 + rng.random()
            t0 = time.time()
            keys = ("loss",) if long else ("loss", "acc", "val_loss")
            chunks = []
            for key in keys:
                values = [
                    (2.0 / (1 + s * speed / 50) if key != "acc" else 1 - 1 / (1 + s * speed / 50))
                    + rng.gauss(0, 0.01)
                    for s in range(count)
                ]
                for first in range(0, count, CHUNK):
                    part = range(first, min(first + CHUNK, count))
                    chunk = chunk_of(
                        key, part, values[first : first + CHUNK], [t0 + s * 0.01 for s in part]
                    )
                    assert chunk is not None
                    chunks.append(chunk)
            store.add_metrics(pk, chunks)
            store.finish_run(
                run_id,
                "completed" if i % 10 else "failed",
                {"acc": 1 - values[-1] if long else rng.random(), "loss": values[-1]},
            )
            if long:
                long_ids.append(run_id)
            if i and i % 2000 == 0:
                print(f"  {i} runs written ({time.perf_counter() - started:.0f} s)", flush=True)
    (root / "bench-long-runs.json").write_text(json.dumps(long_ids))
    return long_ids


def start(argv: list[str], pattern: str) -> tuple[subprocess.Popen[str], str]:
    """Start a server; returns it and the first match of ``pattern`` in its output."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        found = re.search(pattern, line)
        if found:
            return process, found[1]
        if not line and process.poll() is not None:
            break
    process.kill()
    raise SystemExit(f"server did not start: {' '.join(argv)}")


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def peak_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of ``pid`` and its children, in MB."""
    total = 0.0
    pids = [pid]
    for child in Path("/proc").glob("[0-9]*"):
        try:
            if f"PPid:\t{pid}\n" in (child / "status").read_text():
                pids.append(int(child.name))
        except OSError:
            continue
    for one in pids:
        text = Path(f"/proc/{one}/status").read_text()
        total += int(re.search(r"VmHWM:\s+(\d+)", text)[1]) / 1024  # type: ignore[index]
    return total


def server_ms(response: Any) -> float:
    found = re.search(r"dur=([\d.]+)", response.headers.get("server-timing", ""))
    return float(found[1]) if found else math.nan


def timed(client: Any, url: str, repeat: int) -> tuple[float, float]:
    """Median server time and median wall time (ms) of GET ``url``."""
    servers, walls = [], []
    for _ in range(repeat):
        began = time.perf_counter()
        response = client.get(url)
        walls.append((time.perf_counter() - began) * 1000)
        response.raise_for_status()
        servers.append(server_ms(response))
    return median(servers), median(walls)


def bench_mlbook(root: Path, long_ids: list[str], repeat: int) -> dict[str, float]:
    import httpx
    from playwright.sync_api import sync_playwright

    process, url = start(
        [sys.executable, "-m", "mlbook", "-C", str(root), "ui", "--port", "0"],
        r"on (http://127\.0\.0\.1:\d+/)",
    )
    out: dict[str, float] = {}
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            began = time.perf_counter()
            first = client.get("/")
            out["first page, cold server (server)"] = server_ms(first)
            out["first page, cold server (wall)"] = (time.perf_counter() - began) * 1000
            cases = {
                "table page (warm)": "/",
                "sort by final metric -acc": "/?sort=-metrics.acc",
                "sort by series min.loss": "/?cols=version,status,min.loss&sort=min.loss",
                "filter acc>0.9": "/?q=acc>0.9",
                "filter params + metric, sorted": "/?q=params.opt=adam acc>0.5&sort=-acc",
                "next page (keyset)": None,
            }
            page = client.get("/?sort=-metrics.acc").text
            cursor = re.search(r'href="/\?([^"]*after=[^"]*)" rel="next"', page)
            assert cursor
            cases["next page (keyset)"] = "/?" + cursor[1].replace("&amp;", "&")
            for name, path in cases.items():
                server, wall = timed(client, path or "/", repeat)
                out[f"{name} (server)"] = server
                out[f"{name} (wall)"] = wall
            curves = f"/api/curves?runs={','.join(long_ids)}&keys=loss&buckets=1232"
            server, wall = timed(client, curves, repeat)
            out["/api/curves 20 runs x 10k steps (server)"] = server
            out["/api/curves 20 runs x 10k steps (wall)"] = wall
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM)
            context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
            tab = context.new_page()
            paints, sorts, charts = [], [], []
            for _ in range(max(3, repeat // 2)):
                tab.goto(url, wait_until="load")
                paints.append(tab.evaluate(FIRST_PAINT))
                sorts.append(
                    tab.evaluate(
                        """() => new Promise((resolve) => {
                            const t = performance.now();
                            document.body.addEventListener('htmx:afterSettle',
                                () => resolve(performance.now() - t), {once: true});
                            document.querySelector('a[href*="sort=-metrics.acc"]').click();
                        })"""
                    )
                )
                tab.goto(f"{url}curves?runs={','.join(long_ids)}&keys=loss")
                tab.wait_for_selector(".charts[data-state='drawn']")
                charts.append(float(tab.get_attribute(".charts", "data-ms") or "nan"))
            tab.screenshot(path=str(root / "bench-curves.png"))
            browser.close()
        out["table first contentful paint (browser)"] = median(paints)
        out["click sort header -> table swapped (browser)"] = median(sorts)
        out["chart 20 runs x 10k steps, request -> drawn (browser)"] = median(charts)
        out["server peak memory (MB)"] = peak_mb(process.pid)
    finally:
        stop(process)
    return out


MLFLOW_SEED = """
import json, logging, random, sqlite3, sys, time, uuid
logging.disable(logging.WARNING)
import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

path, total, seed, long_runs, long_steps = sys.argv[1], *map(int, sys.argv[2:6])
mlflow.set_tracking_uri(f"sqlite:///{path}")
client = MlflowClient()
exp = client.create_experiment("bench")
rng = random.Random(0)
for i in range(seed):
    run = client.create_run(exp, run_name=f"bench-{i}")
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, rng.random(), now, 999) for k in ("acc", "loss", "val_loss")],
        params=[Param("lr", str([0.1, 0.03, 0.01, 0.003, 0.001][i % 5])),
                Param("width", str([16, 32, 64, 128][i % 4])),
                Param("opt", ["sgd", "adam"][i % 2])],
    )
    client.set_terminated(run.info.run_id)
db = sqlite3.connect(path)
seeds = [r[0] for r in db.execute("SELECT run_uuid FROM runs")]
tables = ["runs", "params", "tags", "metrics", "latest_metrics"]
columns = {t: [c[1] for c in db.execute(f"PRAGMA table_info({t})")] for t in tables}
rows = {t: db.execute(f"SELECT * FROM {t}").fetchall() for t in tables}
with db:
    made = len(seeds)
    while made < total - long_runs:
        batch = min(len(seeds), total - long_runs - made)
        chosen = set(seeds[:batch])
        new = {old: uuid.uuid4().hex for old in chosen}
        for t in tables:
            at = columns[t].index("run_uuid")
            marks = ", ".join("?" * len(columns[t]))
            copies = [r[:at] + (new[r[at]],) + r[at + 1:] for r in rows[t] if r[at] in chosen]
            db.executemany(f"INSERT INTO {t} VALUES ({marks})", copies)
        made += batch
db.close()
long_ids = []
for i in range(long_runs):
    run = client.create_run(exp, run_name=f"long-{i}")
    now = int(time.time() * 1000)
    for first in range(0, long_steps, 1000):
        client.log_batch(run.info.run_id, metrics=[
            Metric("loss", 2.0 / (1 + s / 50) + rng.gauss(0, 0.01), now + s, s)
            for s in range(first, min(first + 1000, long_steps))])
    client.set_terminated(run.info.run_id)
    long_ids.append(run.info.run_id)
print(json.dumps({"experiment": exp, "long": long_ids}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_mlflow(work: Path, runs: int, repeat: int) -> dict[str, float]:
    import httpx
    from playwright.sync_api import sync_playwright

    python, server = MLFLOW_VENV / "bin" / "python", MLFLOW_VENV / "bin" / "mlflow"
    db = work / "mlflow.db"
    if not db.exists():
        argv = [str(python), "-c", textwrap.dedent(MLFLOW_SEED), str(db), str(runs + LONG_RUNS)]
        argv += ["200", str(LONG_RUNS), str(LONG_STEPS)]
        seeded = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (work / "mlflow.json").write_text(seeded.splitlines()[-1])
    info = json.loads((work / "mlflow.json").read_text())
    port = free_port()
    argv = [str(server), "server", "--backend-store-uri", f"sqlite:///{db}"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    out: dict[str, float] = {}
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("mlflow server did not start")
                time.sleep(0.5)
            search = "/ajax-api/2.0/mlflow/runs/search"
            base = {"experiment_ids": [info["experiment"]], "max_results": 100}
            cases = {
                "runs table, newest 100": {**base, "order_by": ["attributes.start_time DESC"]},
                "sort by metric acc": {**base, "order_by": ["metrics.`acc` DESC"]},
                "filter metrics.acc > 0.9": {**base, "filter": "metrics.acc > 0.9"},
            }
            for name, body in cases.items():
                walls = []
                for _ in range(repeat):
                    began = time.perf_counter()
                    client.post(search, json=body).raise_for_status()
                    walls.append((time.perf_counter() - began) * 1000)
                out[f"{name} (wall)"] = median(walls)
            walls = []
            for _ in range(max(1, repeat // 2)):
                began = time.perf_counter()
                for run_id in info["long"]:
                    client.get(
                        "/ajax-api/2.0/mlflow/metrics/get-history",
                        params={"run_id": run_id, "metric_key": "loss", "max_results": 25000},
                    ).raise_for_status()
                walls.append((time.perf_counter() - began) * 1000)
            out["history of 20 runs x 10k steps, full (wall)"] = median(walls)
            walls = []
            for _ in range(repeat):
                began = time.perf_counter()
                client.get(
                    "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                    params=[("run_ids", r) for r in info["long"]]
                    + [("metric_key", "loss"), ("max_results", "320")],
                ).raise_for_status()
                walls.append((time.perf_counter() - began) * 1000)
            out["history of 20 runs, sampled to 320 points (wall)"] = median(walls)
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM)
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            paints, shown = [], []
            for _ in range(3):
                began = time.perf_counter()
                tab.goto(f"{url}/#/experiments/{info['experiment']}/runs", wait_until="load")
                newest = f"long-{LONG_RUNS - 1}"
                tab.get_by_role("link", name=newest, exact=True).first.wait_for(timeout=120_000)
                shown.append((time.perf_counter() - began) * 1000)
                paints.append(tab.evaluate(FIRST_PAINT))
            browser.close()
        out["runs page first contentful paint (browser)"] = median(paints)
        out["runs page until the newest run shows (browser)"] = median(shown)
        out["server peak memory (MB)"] = peak_mb(process.pid)
    finally:
        stop(process)  # type: ignore[arg-type]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--store", type=Path, help="keep (and reuse) the project here")
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()
    work = args.store or Path(tempfile.mkdtemp()) / "bench-ui"
    root = work / "project"
    if (root / "bench-long-runs.json").exists():
        long_ids = json.loads((root / "bench-long-runs.json").read_text())
        print(f"reusing {root}")
    else:
        print(f"writing {args.runs} runs x 3 metrics x {args.steps} steps + 20 x 10k into {root}")
        began = time.perf_counter()
        long_ids = make_project(root, args.runs, args.steps)
        size = (root / ".mlbook" / "runs.sqlite").stat().st_size / 1e6
        print(f"  written in {time.perf_counter() - began:.0f} s, store {size:.0f} MB")
    results = bench_mlbook(root, long_ids, args.repeat)
    print(f"\nmlbook ui, {args.runs} runs (medians of {args.repeat}; ms unless said)")
    for name, value in results.items():
        print(f"  {name:<58} {value:>9.1f}")
    checks = [
        ("first table page <= 300 ms server", results["first page, cold server (server)"], 300),
        ("painted <= 1 s", results["table first contentful paint (browser)"], 1000),
        (
            "sort/filter <= 150 ms (slowest, wall)",
            max(v for k, v in results.items() if k.startswith(("sort", "filter")) and "wall" in k),
            150,
        ),
        ("chart <= 500 ms", results["chart 20 runs x 10k steps, request -> drawn (browser)"], 500),
        ("memory <= 200 MB", results["server peak memory (MB)"], 200),
    ]
    for name, value, limit in checks:
        print(f"  target {name:<40} {value:>9.1f}  {'met' if value <= limit else 'NOT met'}")
    if args.skip_mlflow:
        return
    if not (MLFLOW_VENV / "bin" / "mlflow").exists():
        print("\n(MLflow skipped: no benchmarks/.venv-mlflow; bash benchmarks/setup_peers.sh)")
        return
    peer = bench_mlflow(work, args.runs, args.repeat)
    print(f"\nmlflow server (mlflow ui), the same {args.runs} runs + 20 long runs")
    for name, value in peer.items():
        print(f"  {name:<58} {value:>9.1f}")


if __name__ == "__main__":
    main()
