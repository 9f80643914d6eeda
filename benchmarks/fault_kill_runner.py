"""Fault injection: `kill -9` of the runner at random moments during fast logging.

Run: .venv/bin/python benchmarks/fault_kill_runner.py [--kills 50] [--seed 0]
(`tests/test_faults.py` runs it with `--kills 3`.)

Each round starts `mlbook run E001` (a new process), whose train hook logs
three metrics a step as fast as it can and calls `run.flush()` every 2,000
steps, appending the step count to a marker file after each flush returns
(what the training loop was told is durable). After a random 0.3-3 s the
runner gets SIGKILL (its child dies with it). Then:

- every point up to the last acknowledged flush is in the store, once each
  (steps 0..N-1 of every key, no duplicates);
- `PRAGMA integrity_check` is `ok`;
- the next writing open marks the run `crashed`, its metrics kept.

Prints one line per round and a summary; exits 1 when any flushed point was
lost or any check failed. Target (issue 11): 50 kills, 0 flushed points lost,
0 integrity errors.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = """
import os
import mlbook

exp = mlbook.Experiment(versions={"fast": {}})

@exp.train
def train(run):
    marker = os.environ["MLBOOK_FAULT_MARKER"]
    step = 0
    while True:
        for _ in range(2000):
            run.log(step=step, loss=1.0 / (step + 1), acc=step * 1e-6, lr=0.1)
            step += 1
        run.flush()
        with open(marker, "a") as out:
            out.write(f"{step}\\n")
"""

KEYS = ("loss", "acc", "lr")


def _wait_dead(pid: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
        except (OSError, IndexError):
            return
        if state == "Z":
            return
        time.sleep(0.02)


def one_round(root: Path, index: int, rng: random.Random) -> dict[str, object]:
    marker = root.parent / f"flushed-{index}.txt"
    env = dict(os.environ, MLBOOK_FAULT_MARKER=str(marker))
    runner = subprocess.Popen(
        [sys.executable, "-m", "mlbook", "run", "E001", "-q"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    delay = rng.uniform(0.3, 3.0)
    time.sleep(delay)
    store = root / ".mlbook" / "runs.sqlite"
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30) as db:
        row = db.execute("SELECT pk, id, pid FROM runs ORDER BY pk DESC LIMIT 1").fetchone()
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    if row is not None and row[2]:
        _wait_dead(int(row[2]))
    flushed = int(marker.read_text().split()[-1]) if marker.exists() else 0
    with sqlite3.connect(store, timeout=30) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    from mlbook.experiments.query import metric_series, runs

    record = runs(root)[0]
    series = metric_series(root, record)
    lost = 0
    duplicates = 0
    for key in KEYS:
        steps = [p.step for p in series.get(key, [])]
        duplicates += len(steps) - len(set(steps))
        lost += max(0, flushed - len({s for s in steps if s < flushed}))
    stored = len(series.get("loss", []))
    from mlbook.experiments.store import Store

    with Store.open(store):  # a writing open records the dead runner's run
        pass
    status = runs(root)[0].status
    return {
        "round": index,
        "killed_after_s": round(delay, 2),
        "flushed_steps": flushed,
        "stored_steps": stored,
        "lost": lost,
        "duplicates": duplicates,
        "integrity": integrity,
        "status": status,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from mlbook.scaffold import init_project

    root = Path(tempfile.mkdtemp(prefix="mlbook-faults-")) / "proj"
    project = init_project(root).project
    (project.models_dir / "E001_fast.py").write_text(SCRIPT)
    rng = random.Random(args.seed)
    failures = 0
    totals = {"flushed_steps": 0, "lost": 0, "duplicates": 0}
    for index in range(args.kills):
        result = one_round(root, index, rng)
        bad = (
            result["lost"]
            or result["duplicates"]
            or result["integrity"] != "ok"
            or result["status"] != "crashed"
        )
        failures += bool(bad)
        for key in totals:
            totals[key] += int(result[key])  # type: ignore[call-overload]
        print(" ".join(f"{k}={v}" for k, v in result.items()) + ("  FAIL" if bad else ""))
    print(
        f"{args.kills} kills: {totals['flushed_steps']:,} flushed steps x {len(KEYS)} keys, "
        f"{totals['lost']} lost, {totals['duplicates']} duplicates, "
        f"{failures} failed round(s) (target: 0 lost, 0 integrity errors)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
