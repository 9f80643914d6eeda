"""Datumaro's filter on the records of bench_index.py: the peer of `mlbook data query`.

Run with the Python of a venv where Datumaro installed (it is not an mlbook dependency):

    bash benchmarks/setup_peers.sh      # makes benchmarks/.venv-datumaro among others
    benchmarks/.venv-datumaro/bin/python benchmarks/bench_index_datumaro.py --records 100000

Reads the first ``--records`` lines of ``<dir>/ds/records.jsonl`` (written by
bench_index.py) into a Datumaro dataset in memory, then filters it with the XPath
expression equivalent to the README's example query (Datumaro builds an XML element per
item and evaluates the XPath on it). Prints the load time, the filter time and the
number of matches (compare with ``mlbook data query ... --count`` on the same records),
and the process's peak memory (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

XPATH = (
    '/item[subset="train" and count(annotation[label="car"]) >= 2'
    ' and not(annotation[label="person"]) and annotation[w < 32 or h < 32]]'
)


def main() -> None:
    import logging

    from datumaro.components.annotation import AnnotationType, Bbox, LabelCategories
    from datumaro.components.dataset import Dataset
    from datumaro.components.dataset_base import DatasetItem

    logging.disable(logging.WARNING)  # the XPath filter is deprecated and says so per call
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mlbook-bench-index"))
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    start = time.perf_counter()
    labels: dict[str, int] = {}
    items = []
    with (args.dir / "ds" / "records.jsonl").open() as handle:
        for number, line in enumerate(handle):
            if number >= args.records:
                break
            record = json.loads(line)
            annotations = []
            for box in record.get("boxes", []):
                label = labels.setdefault(box["name"], len(labels))
                annotations.append(
                    Bbox(
                        box["x1"],
                        box["y1"],
                        box["x2"] - box["x1"],
                        box["y2"] - box["y1"],
                        label=label,
                    )
                )
            items.append(
                DatasetItem(id=record["id"], subset=record.get("split"), annotations=annotations)
            )
    categories = LabelCategories()
    for name in labels:
        categories.add(name)
    dataset = Dataset.from_iterable(items, categories={AnnotationType.label: categories})
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    matches = len(dataset.filter(XPATH))
    filtered = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"datumaro {args.records:,} records: load {loaded:.1f} s, "
        f"XPath filter {filtered:.2f} s, {matches:,} matches, peak memory {peak:.0f} MB"
    )


if __name__ == "__main__":
    main()
