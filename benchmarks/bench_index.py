"""The dataset index (issue 15) on 1,000,000 synthetic records (about 4.5M boxes).

Measures, beside a plain Python loop over the same records:

1. the build of the index from ``records.jsonl`` (a fresh process each time; median
   wall time of ``--builds`` builds, and peak memory, ``ru_maxrss``, of the builder
   and of its worker process, summed) -- target <= 30 s and <= 1 GB; then the same
   for a one-process build (``processes=1``), for comparison;
2. the README's example query ``split = train and count(car) >= 2 and not has(person)
   and min_box_side < 32``: its count and its ids -- target <= 0.1 s; the first page
   (50 rows, what ``mlbook data query`` shows) -- target <= 20 ms;
3. the staleness check before every query (``index_state``) -- target <= 50 ms;
4. the plain Python loop: the same filter over records already decoded in memory,
   and reading + decoding ``records.jsonl`` first (what a script does today).

Medians of ``--repeat`` runs (the machine is shared and noisy). Datumaro's filter
(XPath over an XML element built per item) is measured by
``benchmarks/bench_index_datumaro.py`` when Datumaro installs in its own venv.

Usage: python benchmarks/bench_index.py [--records N] [--dir DIR] [--repeat N] [--builds N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from _common import median, time_call

from mlbook.datasets.index import DatasetIndex, Query, index_path, index_state
from mlbook.datasets.metadata import Record, decode_records_fast

EXAMPLE = "split = train and count(car) >= 2 and not has(person) and min_box_side < 32"
LABELS = ["car", "person", "bike", "truck", "bus", "dog", "cat", "traffic light"] + [
    f"class{i:02d}" for i in range(72)
]
WEIGHTS = [20, 20, 6, 5, 4, 3, 3, 3] + [0.5] * 72

BUILD = """
import resource, sys, time
from pathlib import Path
from mlbook.datasets.index import build_index
processes = None if sys.argv[2] == "auto" else int(sys.argv[2])
start = time.perf_counter()
build_index(Path(sys.argv[1]), processes=processes)
took = time.perf_counter() - start
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the reaped worker
print(took, me, worker)
"""


def generate(root: Path, n: int, seed: int = 0) -> int:
    """Write ``n`` records (0 to 9 boxes each, 4.5 on average); returns the box count."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root.parent / "mlbook.toml").touch()  # the index goes to <dir>/.mlbook/index/
    boxes_total = 0
    splits = ["train"] * 8 + ["val", "test"]
    with (root / "records.jsonl").open("w") as out:
        for i in range(n):
            k = rng.randint(0, 9)
            boxes_total += k
            names = rng.choices(LABELS, WEIGHTS, k=k)
            parts = []
            for name in names:
                x1 = rng.randint(0, 560)
                y1 = rng.randint(0, 400)
                w = rng.choice((rng.randint(4, 31), rng.randint(32, 80)))
                h = rng.randint(4, 80)
                parts.append(f'{{"name":"{name}","x1":{x1},"y1":{y1},"x2":{x1 + w},"y2":{y1 + h}}}')
            labels = json.dumps(sorted(set(names)))
            out.write(
                f'{{"id":"{i:07d}","file":"images/{i:07d}.jpg","width":640,"height":480,'
                f'"labels":{labels},"boxes":[{",".join(parts)}],'
                f'"split":"{splits[i % 10]}"}}\n'
            )
    (root / "count").write_text(f"{n} {boxes_total}\n")
    return boxes_total


def python_filter(records: list[Record]) -> list[str]:
    """The example query as a plain loop over decoded records."""
    found = []
    for r in records:
        if r.split != "train" or not r.boxes:
            continue
        cars = sum(1 for b in r.boxes if b.name == "car")
        cars = max(cars, r.counts.get("car", 0), 1 if "car" in r.labels else 0)
        if cars < 2:
            continue
        if (
            "person" in r.labels
            or r.counts.get("person")
            or any(b.name == "person" for b in r.boxes)
        ):
            continue
        if min(min(b.x2 - b.x1, b.y2 - b.y1) for b in r.boxes) < 32:
            found.append(r.id)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mlbook-bench-index"))
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--builds", type=int, default=3, help="builds timed (median)")
    args = parser.parse_args()
    root = args.dir / "ds"
    marker = root / "count"
    if not marker.exists() or int(marker.read_text().split()[0]) != args.records:
        start = time.perf_counter()
        boxes = generate(root, args.records)
        print(
            f"generated {args.records:,} records, {boxes:,} boxes "
            f"in {time.perf_counter() - start:.1f} s"
        )
    records_n, boxes = map(int, marker.read_text().split())
    size = (root / "records.jsonl").stat().st_size
    print(f"dataset: {records_n:,} records, {boxes:,} boxes, records.jsonl {size / 1e6:.0f} MB")

    print(f"load average before the builds: {os.getloadavg()[0]:.2f}")
    for processes in ("1", "auto"):  # the queries below run on the last one built
        times, walls, builders, workers = [], [], [], []
        for _ in range(args.builds):
            index_path(root).unlink(missing_ok=True)
            start = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", BUILD, str(root), processes],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            walls.append(time.perf_counter() - start)
            times.append(float(out[0]))
            builders.append(int(out[1]) / 1024)
            workers.append(int(out[2]) / 1024)
        name = "build" if processes == "auto" else "one-process build (processes=1)"
        both = max(b + w for b, w in zip(builders, workers, strict=True))
        print(
            f"{name}: median {median(times):.1f} s of {args.builds} "
            f"({', '.join(f'{t:.1f}' for t in times)}; process {median(walls):.1f} s), "
            f"peak memory {both:.0f} MB (builder {max(builders):.0f} MB + worker "
            f"{max(workers):.0f} MB), index {index_path(root).stat().st_size / 1e6:.0f} MB"
        )

    staleness = median(time_call(lambda: index_state(root), args.repeat * 3))
    print(f"staleness check: {staleness * 1000:.2f} ms")

    query = Query(root, EXAMPLE)
    built = (
        Query(root).split("train").count("car", ">=", 2).none("person").match("min_box_side < 32")
    )
    with DatasetIndex.open(root) as index:
        matched = index.count(query)
        count_t = median(time_call(lambda: index.count(query), args.repeat))
        ids_t = median(time_call(lambda: index.ids(query), args.repeat))
        page_t = median(time_call(lambda: index.rows(query, 50), args.repeat))
        built_t = median(time_call(lambda: index.ids(built), args.repeat))
        ids = index.ids(query)
    print(
        f"example query: {matched:,} matches; count {count_t * 1000:.1f} ms, "
        f"ids {ids_t * 1000:.1f} ms, first page (50) {page_t * 1000:.1f} ms, "
        f"builder ids {built_t * 1000:.1f} ms"
    )
    opened = median(time_call(lambda: Query(root, EXAMPLE).count_records(), args.repeat))
    print(f"  open index + staleness + count (a fresh Query): {opened * 1000:.1f} ms")

    start = time.perf_counter()
    data = (root / "records.jsonl").read_bytes()
    records = decode_records_fast(data)
    assert records is not None
    del data
    load_t = time.perf_counter() - start
    loop_t = median(time_call(lambda: python_filter(records), max(3, args.repeat // 2)))
    assert python_filter(records) == ids, "the index and the loop disagree"
    print(
        f"plain Python loop: filter {loop_t:.2f} s over records in memory "
        f"(+ {load_t:.1f} s to read and decode records.jsonl)"
    )
    print(
        f"ratio: loop / index ids = {loop_t / ids_t:.0f}x; "
        f"(read + loop) / index ids = {(load_t + loop_t) / ids_t:.0f}x"
    )


if __name__ == "__main__":
    main()
