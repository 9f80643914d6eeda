"""YOLO conversion speed: a 5,000-image Ultralytics dataset to mlbook and back.

Generates an Ultralytics dataset (``data.yaml``, ``images/{train,val}/``,
``labels/{train,val}/``; 64x48 JPEGs, 3 boxes and one polygon per image) in a
temporary folder, then times ``mlbook.convert`` into a new mlbook dataset (images
hard-linked, sizes read from the image headers) and back to the Ultralytics layout.
Prints the medians (target: to mlbook <= 1 s).

Usage: python benchmarks/bench_yolo_convert.py [--images 5000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median

from mlbook.datasets.convert import convert


def generate(root: Path, count: int) -> None:
    """An Ultralytics dataset of ``count`` images, four fifths in train."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 90, 60)).save(buffer, format="JPEG")
    jpeg = buffer.getvalue()
    labels = (
        "0 0.500000 0.500000 0.250000 0.250000\n"
        "1 0.250000 0.300000 0.100000 0.200000\n"
        "2 0.700000 0.600000 0.300000 0.400000\n"
        "1 0.100000 0.100000 0.400000 0.100000 0.400000 0.500000 0.100000 0.500000\n"
    )
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    for index in range(count):
        split = "val" if index % 5 == 4 else "train"
        (root / "images" / split / f"{index:06d}.jpg").write_bytes(jpeg)
        (root / "labels" / split / f"{index:06d}.txt").write_text(labels)
    (root / "data.yaml").write_text(
        "train: images/train\nval: images/val\nnames:\n  0: car\n  1: bike\n  2: person\n"
    )


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
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        work = Path(name)
        source = work / "yolo"
        generate(source, args.images)
        runs = iter(range(10**6))

        def to_mlbook() -> None:
            target = work / f"ds{next(runs)}"
            convert(source, target, src_format="yolo")
            shutil.rmtree(target)

        def back_to_yolo() -> None:
            target = work / f"back{next(runs)}"
            convert(work / "dataset", target, dst_format="yolo")
            shutil.rmtree(target)

        convert(source, work / "dataset", src_format="yolo")
        to_mlbook()  # warm the page cache and imports
        forward = _times(to_mlbook, args.repeat)
        back = _times(back_to_yolo, args.repeat)
    boxes = 4 * args.images
    print(f"Ultralytics YOLO, {args.images} images, {boxes} boxes, medians of {args.repeat}")
    print("                                              wall s   cpu s")
    print(
        f"yolo -> mlbook (sizes from headers, linked)   {forward[0]:6.3f}  {forward[1]:6.3f}"
        "  (target <= 1 s)"
    )
    print(
        f"mlbook -> yolo (Ultralytics, linked)          {back[0]:6.3f}  {back[1]:6.3f}"
        f"  ({args.images} label files written and flushed)"
    )


if __name__ == "__main__":
    main()
