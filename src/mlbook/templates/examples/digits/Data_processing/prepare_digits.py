"""Prepare the digits dataset: scikit-learn's 1,797 handwritten digits as PNG files + mlbook records.

Run it from anywhere inside the project:

    python Data_processing/prepare_digits.py
    mlbook data process Data_processing/prepare_digits.py --out Datasets/digits   # a recorded step

``--out DIR`` writes the dataset into DIR (``mlbook data process`` passes a new
directory it renames into place); ``--limit N`` keeps the first N images only.

It writes ``Datasets/digits/``: ``images/00000.png`` ... (8x8 grayscale), ``records.jsonl``
(one record per image: its label and its split) and ``dataset.json`` (the classes
"0".."9" with their fixed ids). Splits are stratified by label: train 70 %,
val 15 %, test 15 %, with a fixed seed, so every run of this script gives the same
dataset. The data ships inside scikit-learn: nothing is downloaded.

The directory is built next to the old one and swapped in at the end, so an
interrupted run never leaves a half-written dataset.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

import mlbook
from mlbook.datasets import ClassInfo, DatasetInfo, Record
from mlbook.datasets.split import assign_splits

SPLITS = {"train": 0.7, "val": 0.15, "test": 0.15}
SEED = 0


def build(target: Path, limit: int | None = None) -> mlbook.Dataset:
    """Write the images into ``target/images`` and return the dataset (not saved yet)."""
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
    (target / "images").mkdir(parents=True)
    records = []
    pairs = list(zip(images, digits.target, strict=True))[:limit]
    for index, (pixels, label) in enumerate(pairs):
        name = f"images/{index:05d}.png"
        Image.fromarray(pixels).save(target / name)
        records.append(
            Record(id=f"{index:05d}", file=name, width=8, height=8, labels=[str(int(label))])
        )
    info = DatasetInfo(
        name="digits",
        description="Handwritten digits, 8x8 grayscale (scikit-learn's load_digits).",
        source="scikit-learn sklearn.datasets.load_digits: the test set of the UCI ML "
        "Optical Recognition of Handwritten Digits dataset (Alpaydin & Kaynak, 1998)",
        licence="CC BY 4.0 (UCI Machine Learning Repository)",
        classes=[ClassInfo(id=digit, name=str(digit)) for digit in range(10)],
    )
    dataset = mlbook.Dataset(info, records, target)
    return assign_splits(dataset, SPLITS, seed=SEED, stratify=True)


def prepare(datasets_dir: Path, limit: int | None = None) -> Path:
    """Build ``datasets_dir/digits`` (replacing an old copy only once the new one is complete)."""
    final = datasets_dir / "digits"
    work = Path(tempfile.mkdtemp(prefix=".digits-", dir=datasets_dir))
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp makes it private; the dataset is not
    try:
        dataset = build(work, limit)
        dataset.save(work)
        if final.exists():
            old = final.with_name(f".digits-old-{work.name}")
            final.rename(old)
            work.rename(final)
            shutil.rmtree(old)
        else:
            work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the dataset into this directory")
    parser.add_argument("--limit", type=int, help="keep the first N images only")
    args = parser.parse_args()
    project = mlbook.Project.open(mlbook.find_root(Path(__file__).resolve().parent))
    if args.out is not None:  # mlbook data process: a new directory, renamed into place after
        args.out.mkdir(parents=True, exist_ok=True)
        build(args.out, args.limit).save(args.out)
        target = args.out
    else:
        target = prepare(project.datasets_dir, args.limit)
    dataset = mlbook.open_dataset(target)
    counts = ", ".join(f"{split} {len(dataset.records(split))}" for split in dataset.splits)
    print(f"wrote {len(dataset)} images to {project.relative(target)}/ ({counts})")


if __name__ == "__main__":
    main()
