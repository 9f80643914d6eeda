"""Planning without importing scripts: `mlbook ls` and the parent's share of a test run.

Run: .venv/bin/python benchmarks/bench_plan.py [--repeat 15]

1. `mlbook ls` on the digits example (`mlbook init p --example digits`; its
   scripts import torch), side by side with `mlbook --help` and `python -c pass`,
   the commands interleaved round by round so load on the shared machine hits
   them alike. Output piped. Wall and CPU time (user + system) are both shown:
   on a loaded machine wall time grows with the load, CPU time much less.
2. `mlbook run E001 --mode test -q` where the script imports torch and its train
   hook returns at once. The child's own time runs from its interpreter start
   (a `sitecustomize` on PYTHONPATH writes a timestamp, so the ~10 ms before
   `site` counts against the parent) to the train hook's return; the parent's
   share is the command's wall time minus that. The parent's CPU time is the
   command's CPU time (its children included) minus the child's CPU time at
   the hook's return (`time.process_time()`).
Targets (issue 19): `mlbook ls` <= 0.2 s and <= 4x `mlbook --help`; the parent
adds <= 0.3 s over the child's own time.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median

SITECUSTOMIZE = """
import os, time
_mark = os.environ.get("BENCH_PLAN_MARKS")
if _mark:
    with open(_mark, "a") as _file:
        _file.write(f"start {os.getpid()} {time.time()!r}\\n")
"""

SCRIPT = """
import os
import time

import torch  # noqa: F401

import mlbook

exp = mlbook.Experiment(versions={"only": {"lr": 0.1}})


@exp.train
def train(run):
    with open(os.environ["BENCH_PLAN_MARKS"], "a") as file:
        file.write(f"end {os.getpid()} {time.time()!r} {time.process_time()!r}\\n")
    return {}
"""


#: As installed: Python writes and reuses bytecode (a PYTHONDONTWRITEBYTECODE=1 in the
#: environment would make every run compile mlbook's sources again).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    return timed(argv, env, cwd)[0]


def timed(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, float]:
    """Wall time and CPU time (user + system, the process and its children) of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        env=env or ENV,
        cwd=cwd,
    )
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return took, cpu


def bench_ls(mlbook: str, repeat: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-plan-"))
    subprocess.run(
        [mlbook, "init", str(work / "p"), "--example", "digits"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "mlbook --help": [mlbook, "--help"],
        "mlbook ls": [mlbook, "ls"],
        "mlbook ls --format json": [mlbook, "ls", "--format", "json"],
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    cpus: dict[str, list[float]] = {name: [] for name in rows}
    for index in range(repeat + 2):
        for name, argv in rows.items():
            took, cpu = timed(argv, cwd=work / "p")
            if index >= 2:  # two warm-up rounds
                times[name].append(took)
                cpus[name].append(cpu)
    print(f"digits example, n={repeat} interleaved rounds, medians: wall (min), CPU")
    for name, values in times.items():
        print(
            f"  {name:<28} {median(values) * 1000:>7.0f} ms ({min(values) * 1000:.0f})"
            f"  cpu {median(cpus[name]) * 1000:>5.0f} ms"
        )
    torch = median([wall([sys.executable, "-c", "import torch"]) for _ in range(3)])
    label = "python -c 'import torch'"
    print(f"  {label:<28} {torch * 1000:>7.0f} ms       (what ls paid before)")
    ls, help_ = median(times["mlbook ls"]), median(times["mlbook --help"])
    ratio = ls / help_
    cpu_ratio = median(cpus["mlbook ls"]) / median(cpus["mlbook --help"])
    print(f"  mlbook ls / mlbook --help = {ratio:.1f}x wall, {cpu_ratio:.1f}x cpu (target <= 4x)")
    verdict = ls <= 0.2 and ratio <= 4
    print(f"  target mlbook ls <= 200 ms and <= 4x --help: {'met' if verdict else 'NOT met'}")
    shutil.rmtree(work, ignore_errors=True)


def bench_test_run(mlbook: str, repeat: int) -> None:
    from mlbook.scaffold import init_project

    work = Path(tempfile.mkdtemp(prefix="bench-plan-"))
    root = work / "p"
    init_project(root)
    (root / "Models" / "E001_torch.py").write_text(SCRIPT)
    site = work / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marks = work / "marks.txt"
    env = dict(ENV, PYTHONPATH=str(site), BENCH_PLAN_MARKS=str(marks))
    walls: list[float] = []
    childs: list[float] = []
    parent_cpus: list[float] = []
    argv = [mlbook, "-C", str(root), "run", "E001", "--mode", "test", "-q"]
    for index in range(repeat + 2):
        marks.write_text("")
        took, cpu = timed(argv, env=env)
        starts: dict[str, float] = {}
        own = own_cpu = None
        for line in marks.read_text().splitlines():
            kind, pid, stamp, *rest = line.split()
            if kind == "start":
                starts[pid] = float(stamp)
            elif pid in starts:
                own, own_cpu = float(stamp) - starts[pid], float(rest[0])
        if own is None or own_cpu is None:
            sys.exit(f"no child timestamps in {marks}")
        if index >= 2:
            walls.append(took)
            childs.append(own)
            parent_cpus.append(cpu - own_cpu)  # the child's CPU after its hook counts here too
    parent = [w - c for w, c in zip(walls, childs, strict=True)]
    print(f"mlbook run E001 --mode test (script imports torch), n={repeat}, medians:")
    print(f"  wall time of the command      {median(walls) * 1000:>7.0f} ms")
    print(f"  child's own time              {median(childs) * 1000:>7.0f} ms")
    print(
        f"  parent's share (wall - child) {median(parent) * 1000:>7.0f} ms "
        f"(stdev {statistics.stdev(parent) * 1000:.0f}; target <= 300 ms)"
    )
    print(f"  parent's CPU (all CPU - child's CPU at its hook) {median(parent_cpus) * 1000:.0f} ms")
    print(f"  target: {'met' if median(parent) <= 0.3 else 'NOT met'}")
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    mlbook = shutil.which("mlbook", path=str(Path(sys.executable).parent))
    if mlbook is None:
        sys.exit("mlbook is not installed in this venv: run `bash scripts/test.sh` first")
    bench_ls(mlbook, args.repeat)
    bench_test_run(mlbook, max(3, args.repeat // 2))


if __name__ == "__main__":
    main()
