"""COCO import speed: mlbook vs a bare orjson.loads vs pycocotools, side by side, one run.

Measures on an ``instances_val2017.json``-shaped file (5,000 images, 36,781
annotations). Pass the real file as the first argument if you have it; otherwise a
synthetic file of the same shape is generated (benchmarks/gen_coco_val2017.py).

Prints medians of several runs for each tool, the ratios the issue asks about
(mlbook / orjson <= 1.5, mlbook < pycocotools), the peak traced Python memory of each,
and the time to load the resulting ``records.jsonl``.

Usage: python benchmarks/bench_coco_import.py [instances_val2017.json] [--repeat N]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_coco_val2017 import generate

from mlbook.datasets import open_dataset
from mlbook.datasets.formats import coco


def _times(func: Callable[[], object], repeat: int) -> list[float]:
    func()  # warm the page cache and imports
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
        del result
    return times


def _peak(tool: str, path: Path) -> float:
    """Peak RSS (MB) of a fresh process that imports everything and runs ``tool`` once,
    minus that of one that only imports (so the figure is the tool's own memory)."""

    def rss(what: str) -> float:
        out = subprocess.run(
            [sys.executable, __file__, str(path), "--child", what],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return float(out.strip().splitlines()[-1])

    return rss(tool) - rss("none")


def _child(tool: str, path: Path) -> None:
    from pycocotools.coco import COCO

    result: object = None
    if tool == "orjson":
        result = orjson.loads(path.read_bytes())
    elif tool == "mlbook":
        result = coco.read(path)
    elif tool == "pycocotools":
        with contextlib.redirect_stdout(io.StringIO()):
            result = COCO(str(path))
    elif tool == "jsonl":
        result = open_dataset(path)
    del result
    # VmHWM (peak RSS of this process image); ru_maxrss would carry the parent's peak
    # across fork + exec on Linux.
    status = Path("/proc/self/status").read_text()
    hwm = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    print(int(hwm.split()[1]) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.path)
        return
    path: Path = args.path or Path(tempfile.gettempdir()) / "instances_val2017_synth.json"
    if args.path is None and not path.exists():
        path.write_bytes(orjson.dumps(generate()))
    source = "real" if args.path else "synthetic (benchmarks/gen_coco_val2017.py)"
    size = path.stat().st_size / 1e6
    print(f"file: {path} ({size:.1f} MB, {source})")

    def bare_orjson() -> object:
        return orjson.loads(path.read_bytes())

    def mlbook_import() -> object:
        return coco.read(path)

    def pycocotools_index() -> object:
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))

    dataset = coco.read(path)
    print(
        f"records: {len(dataset)} images, {sum(len(r.boxes) for r in dataset)} boxes, "
        f"{len(dataset.classes)} classes"
    )
    results: dict[str, float] = {}
    peaks: dict[str, float] = {}
    for name, tool, func, repeat in (
        ("orjson.loads", "orjson", bare_orjson, args.repeat),
        ("mlbook coco.read", "mlbook", mlbook_import, args.repeat),
        ("pycocotools COCO()", "pycocotools", pycocotools_index, max(3, args.repeat // 2)),
    ):
        results[name] = statistics.median(_times(func, repeat))
        peaks[name] = _peak(tool, path)
    with tempfile.TemporaryDirectory() as tmp:
        dataset.save(Path(tmp) / "ds")
        jsonl = Path(tmp) / "ds" / "records.jsonl"
        jsonl_mb = jsonl.stat().st_size / 1e6
        results["open_dataset(records.jsonl)"] = statistics.median(
            _times(lambda: open_dataset(Path(tmp) / "ds"), args.repeat)
        )
        peaks["open_dataset(records.jsonl)"] = _peak("jsonl", Path(tmp) / "ds")
    print()
    print(f"{'tool':32} {'median s':>9} {'peak MB':>9}  (peak: extra RSS of a fresh process)")
    for name, seconds in results.items():
        print(f"{name:32} {seconds:9.3f} {peaks[name]:9.1f}")
    print()
    ours = results["mlbook coco.read"]
    print(f"mlbook / orjson.loads      = {ours / results['orjson.loads']:.2f}x (target <= 1.5x)")
    print(f"mlbook / pycocotools COCO  = {ours / results['pycocotools COCO()']:.2f}x (target < 1x)")
    print(
        f"records.jsonl ({jsonl_mb:.1f} MB) load = "
        f"{results['open_dataset(records.jsonl)']:.3f} s (target < 0.5 s)"
    )


if __name__ == "__main__":
    main()
