"""Validation speed: `mlbook data validate` on 100,000 records, clean and with problems.

Writes a dataset of 100,000 records (one image file shared by all, 2 boxes and 2
labels each) into a temporary folder, then times ``validate_dataset`` with the file
checks, on the clean dataset and on one where every tenth record has two problems.
Prints the medians (target: <= 2 s for 100,000 records).

Usage: python benchmarks/bench_validate.py [--records 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median

from mlbook.datasets.validate import validate_dataset

INFO = {"name": "bench", "classes": ["car", "bike", "person"]}


def _record(index: int, bad: bool) -> str:
    x2 = 3 if bad else 90  # x1 >= x2, and a count that disagrees with the boxes
    record = {
        "id": str(index),
        "file": "images/a.jpg",
        "width": 640,
        "height": 480,
        "labels": ["car", "person"],
        "counts": {"car": 2 if bad else 1, "person": 1},
        "boxes": [
            {"name": "car", "x1": 10, "y1": 20, "x2": x2, "y2": 120},
            {"name": "person", "x1": 200, "y1": 40, "x2": 260, "y2": 300},
        ],
        "split": "train" if index % 5 else "val",
    }
    return json.dumps(record, separators=(",", ":")) + "\n"


def _dataset(root: Path, count: int, with_problems: bool) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    (root / "dataset.json").write_text(json.dumps(INFO))
    lines = [_record(i, with_problems and i % 10 == 0) for i in range(count)]
    (root / "records.jsonl").write_text("".join(lines))
    return root


def _times(func: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``func()`` (CPU time is what a shared, loaded
    machine changes least)."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        func()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return median(walls), median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        clean = _dataset(Path(name) / "clean", args.records, False)
        faulty = _dataset(Path(name) / "faulty", args.records, True)
        problems = len(validate_dataset(faulty).problems)
        assert validate_dataset(clean).ok
        clean_wall, clean_cpu = _times(lambda: validate_dataset(clean), args.repeat)
        faulty_wall, faulty_cpu = _times(lambda: validate_dataset(faulty), args.repeat)
    print(f"validate {args.records} records, file checks on, medians of {args.repeat}")
    print("                          wall s   cpu s")
    print(f"clean                     {clean_wall:6.3f}  {clean_cpu:6.3f}  (target <= 2 s)")
    print(f"every tenth record bad    {faulty_wall:6.3f}  {faulty_cpu:6.3f}  ({problems} problems)")


if __name__ == "__main__":
    main()
