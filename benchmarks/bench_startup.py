"""CLI start-up: `mlbook --help` / `--version` against `mlflow --help`, side by side.

Run: .venv/bin/python benchmarks/bench_startup.py [--repeat 21]
Needs the MLflow peer venv (bash benchmarks/setup_peers.sh). Each command is a new
process; the file cache is warm (two unmeasured runs first), as on a developer's machine.
Targets (issue 2): median `mlbook --help` <= 0.15 s and >= 10x faster than `mlflow --help`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from _common import median, mlflow_bin, time_command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args()
    mlbook = shutil.which("mlbook", path=str(Path(sys.executable).parent))
    if mlbook is None:
        sys.exit("mlbook is not installed in this venv: run `bash scripts/test.sh` first")
    rows = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "mlbook --version": [mlbook, "--version"],
        "mlbook --help": [mlbook, "--help"],
        "mlflow --help": [str(mlflow_bin("mlflow")), "--help"],
    }
    results = {name: median(time_command(argv, args.repeat)) for name, argv in rows.items()}
    print(f"{'command':<20} {'median':>10}   (n={args.repeat}, warm file cache)")
    for name, value in results.items():
        print(f"{name:<20} {value * 1000:>8.1f} ms")
    ratio = results["mlflow --help"] / results["mlbook --help"]
    print(f"mlflow --help / mlbook --help = {ratio:.1f}x (target >= 10x)")
    verdict = results["mlbook --help"] <= 0.15 and ratio >= 10
    print(f"target mlbook --help <= 150 ms and >= 10x: {'met' if verdict else 'NOT met'}")


if __name__ == "__main__":
    main()
