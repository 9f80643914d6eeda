"""Runner overhead per version: `mlbook run` against `python script.py`, empty train hook.

Run: .venv/bin/python benchmarks/bench_runner_overhead.py [--repeat 11]

Baseline: `python Models/E001_empty.py` (imports mlbook, declares the experiment,
calls nothing). mlbook: `mlbook run E001 -q` with one version (CLI start, store
open, plan, spawn the child, import the script, run the hook, record, teardown),
and with 10 versions to show the cost of each further version. Every run is
recorded in the store (run mode). Medians of `repeat` process runs, warm cache.
Target (issue 4): at most 0.3 s over `python script.py` per version.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, time_command

SCRIPT = """
import mlbook

exp = mlbook.Experiment(versions={f"v{i}": {"i": i} for i in range(VERSIONS)})

@exp.train
def train(run):
    return None
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=11)
    args = parser.parse_args()
    from mlbook.scaffold import init_project

    mlbook = shutil.which("mlbook", path=str(Path(sys.executable).parent))
    if mlbook is None:
        sys.exit("mlbook is not installed in this venv")
    root = Path(tempfile.mkdtemp()) / "bench"
    init_project(root)
    models = root / "Models"
    (models / "E001_empty.py").write_text(SCRIPT.replace("VERSIONS", "1"))
    (models / "E002_ten.py").write_text(SCRIPT.replace("VERSIONS", "10"))
    base = median(time_command([sys.executable, str(models / "E001_empty.py")], args.repeat))
    one = median(time_command([mlbook, "-C", str(root), "run", "E001", "-q"], args.repeat))
    ten = median(
        time_command([mlbook, "-C", str(root), "run", "E002", "-q"], max(3, args.repeat // 2))
    )
    test = median(
        time_command([mlbook, "-C", str(root), "run", "E001", "-q", "--mode", "test"], args.repeat)
    )
    print(f"{'command':<40} {'median':>10}   (repeat={args.repeat}, warm cache)")
    print(f"{'python Models/E001_empty.py':<40} {base * 1000:>8.0f} ms")
    print(f"{'mlbook run E001 (1 version, recorded)':<40} {one * 1000:>8.0f} ms")
    print(f"{'mlbook run E001 --mode test':<40} {test * 1000:>8.0f} ms")
    print(f"{'mlbook run E002 (10 versions, recorded)':<40} {ten * 1000:>8.0f} ms")
    over = one - base
    each = (ten - one) / 9
    print(f"overhead over python script.py, 1 version: {over * 1000:.0f} ms (target <= 300 ms)")
    print(f"each further version: {each * 1000:.0f} ms")
    print(f"target: {'met' if over <= 0.3 else 'NOT met'}")


if __name__ == "__main__":
    main()
