"""Metrics read from output lines: the cost of parsing a line, alone and end to end.

Run: .venv/bin/python benchmarks/bench_output.py [--lines 200000] [--repeat 5]

1. ``LineParser.parse`` on a corpus of real-looking training output (the
   pytorch/examples MNIST lines, Keras-style epoch lines, Hugging Face dicts,
   Lightning banners, tqdm bars, plain noise), CPU time per line (best of
   ``--repeat``, so other processes on the machine do not count).
2. End to end: a plain script prints ``--lines`` lines of that corpus under the
   real runner, once with ``output_metrics`` on and once off; the difference in
   the child's CPU time (``getrusage(RUSAGE_CHILDREN)``), divided by the lines, is
   what reading them costs (the tee thread, splitting, parsing, logging).

Target (issue 12): <= 2 us a line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import median

CORPUS = [
    "Train Epoch: 1 [0/60000 (0%)]\tLoss: 2.300024",
    "Train Epoch: 1 [640/60000 (1%)]\tLoss: 1.168829",
    "Test set: Average loss: 0.0270, Accuracy: 9914/10000 (99%)",
    "Epoch 4/10 - loss: 0.1234 - acc: 0.9700 - val_loss: 0.2000 - val_acc: 0.9500",
    "{'loss': 0.4521, 'learning_rate': 4.5e-05, 'epoch': 0.12}",
    "epoch 3 loss: 0.12 acc: 0.97",
    "step=120 lr=3e-4 grad_norm=1.25",
    "GPU available: False, used: False",
    "TPU available: False, using: 0 TPU cores",
    " 45%|████▌     | 45/100 [00:12<00:15,  3.61it/s, loss=0.523]",
    "Saving checkpoint to outputs/checkpoint-500",
    "Downloading data from the internet, please wait",
    "",
    "loss: 0.12",
]

SCRIPT = """
import sys
lines = {corpus!r}
n = {n}
write = sys.stdout.write
for i in range(n):
    write(lines[i % len(lines)] + "\\n")
"""


def parse_cost(repeat: int) -> tuple[float, float]:
    """CPU seconds per line of LineParser.parse over the corpus: (mean, worst line)."""
    from mlbook.experiments.output import LineParser

    parser = LineParser()
    costs = []
    for line in CORPUS:
        best = float("inf")
        for _ in range(repeat):
            start = time.process_time()
            for _ in range(5000):
                parser.parse(line)
            best = min(best, (time.process_time() - start) / 5000)
        costs.append(best)
    return sum(costs) / len(costs), max(costs)


def inner(lines: int, metrics: bool) -> None:
    """One end-to-end measurement in this fresh process: prints JSON."""
    from mlbook.experiments.runner import run_experiments
    from mlbook.project import Project
    from mlbook.scaffold import init_project

    root = Path(tempfile.mkdtemp()) / "bench"
    init_project(root)
    config = root / "mlbook.toml"
    config.write_text(
        config.read_text() + f"\n[experiments.E001]\noutput_metrics = {str(metrics).lower()}\n"
    )
    project = Project.open(root)
    (project.models_dir / "E001_print.py").write_text(SCRIPT.format(corpus=CORPUS, n=lines))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = run_experiments(project, ["E001"], observers=[])
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (info,) = result.runs
    assert info.status == "completed", info.error
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(json.dumps({"wall": wall, "cpu": cpu, "metrics": len(info.metrics)}))


def measure(lines: int, metrics: bool) -> dict[str, float]:
    argv = [sys.executable, __file__, "--inner", "on" if metrics else "off"]
    out = subprocess.run(
        [*argv, "--lines", str(lines)],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    ).stdout
    result: dict[str, float] = json.loads(out.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--inner", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.lines, args.inner == "on")
        return
    mean, worst = parse_cost(args.repeat)
    per_line, wall = [], []
    for _ in range(args.repeat):
        off = measure(args.lines, False)
        on = measure(args.lines, True)
        per_line.append((on["cpu"] - off["cpu"]) / args.lines)
        wall.append((on["wall"] - off["wall"]) / args.lines)
    label = f"LineParser.parse, mean over {len(CORPUS)} lines"
    print(f"{label:<48} {mean * 1e6:>6.2f} us")
    print(f"{'LineParser.parse, slowest line':<48} {worst * 1e6:>6.2f} us")
    label = f"end to end, child CPU per line ({args.lines:,} lines)"
    print(f"{label:<48} {median(per_line) * 1e6:>6.2f} us")
    print(f"{'end to end, wall per line (noisy)':<48} {median(wall) * 1e6:>6.2f} us")
    met = mean <= 2e-6 and median(per_line) <= 2e-6
    print(f"target (<= 2 us a line): {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
