"""Load an exported digits model with ``mlbook.load`` and measure it on the test split.

    python Deployment/predict_digits.py                      # the newest digits export
    python Deployment/predict_digits.py Deployment/exports/E001-wide

Deployment code sees the model only as an export (``Deployment/exports/``) and the
data only through ``Datasets/``: it never imports from ``Models/`` (``mlbook check``
would report it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import mlbook


def project() -> mlbook.Project:
    """The project this file belongs to."""
    return mlbook.Project.open(mlbook.find_root(Path(__file__).resolve().parent))


def find_export(root: Path | None = None) -> Path | None:
    """The newest export of a digits experiment (E001 or E002), or ``None``."""
    exports = root or project().exports_dir
    found = [p for p in exports.glob("E00[12]-*") if (p / "manifest.json").is_file()]
    return max(found, key=lambda p: (p / "manifest.json").stat().st_mtime, default=None)


def load_test_split() -> tuple[list[np.ndarray], list[str]]:
    """The test images (8x8 arrays of 0..255 pixels, as in the PNG files) and their labels."""
    dataset = mlbook.open_dataset(project().datasets_dir / "digits")
    records = dataset.records(split="test")
    images = []
    for record in records:
        with Image.open(dataset.path_of(record.file)) as image:
            images.append(np.asarray(image.convert("L"), dtype=np.uint8))
    return images, [record.labels[0] for record in records]


def labels_of(outputs: object) -> list[str]:
    """Predicted labels from the predict hook's outputs (``[{"label": "3", ...}, ...]``)."""
    return [item["label"] if isinstance(item, dict) else str(item) for item in outputs]  # type: ignore[union-attr]


def accuracy(loaded: object, images: list[np.ndarray], truth: list[str]) -> float:
    """The share of ``images`` the loaded model labels right."""
    predicted = labels_of(loaded.predict(np.stack(images)))  # type: ignore[attr-defined]
    return sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", nargs="?", type=Path, help="an export directory")
    args = parser.parse_args()
    path = args.export or find_export()
    if path is None:
        sys.exit("no digits export yet: run `mlbook export E001 --version wide` first")
    loaded = mlbook.load(path)
    images, truth = load_test_split()
    print(f"{path.name}: test accuracy {accuracy(loaded, images, truth):.4f} on {len(truth)} images")
    sample = labels_of(loaded.predict(np.stack(images[:10])))
    print(f"first 10 test images: predicted {' '.join(sample)}, true {' '.join(truth[:10])}")


if __name__ == "__main__":
    main()
