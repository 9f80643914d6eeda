"""Helpers shared by the benchmark scripts: timing, medians, peer environments."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
MLFLOW_VENV = HERE / ".venv-mlflow"


def mlflow_bin(name: str = "python") -> Path:
    """A program from the MLflow peer venv; exits with a hint when it is missing."""
    path = MLFLOW_VENV / "bin" / name
    if not path.exists():
        sys.exit("MLflow peer venv missing: run `bash benchmarks/setup_peers.sh` first")
    return path


def time_command(argv: Sequence[str], repeat: int, warmup: int = 2) -> list[float]:
    """Wall times of running ``argv`` ``repeat`` times (after ``warmup`` unmeasured runs)."""
    times: list[float] = []
    for index in range(warmup + repeat):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return times


def time_call(func: Callable[[], object], repeat: int) -> list[float]:
    """Wall times of ``func()`` over ``repeat`` calls."""
    times: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    """The median of ``values``."""
    return statistics.median(values)


def time_interleaved(
    commands: dict[str, Sequence[str]], repeat: int, warmup: int = 1, cwd: str | None = None
) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and CPU seconds of each command, run in turn (A B C A B C ...).

    Taking turns spreads a shared machine's changing load over every command
    alike, so differences between them mean something. CPU is user + system
    time of the whole process tree (the command and everything it waited for).
    """
    import resource

    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in commands}
    for index in range(warmup + repeat):
        for name, argv in commands.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=cwd
            )
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            if index >= warmup:
                times[name][0].append(wall)
                times[name][1].append(cpu)
    return times
