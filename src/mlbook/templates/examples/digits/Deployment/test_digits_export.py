"""The exported digits model, loaded as deployment will load it, is accurate on the test split.

    pytest Deployment/                  # after `mlbook export E001 --version wide`
    MLBOOK_EXPORT=Deployment/exports/E002-h64 pytest Deployment/

Skipped when there is no export yet.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import mlbook
from predict_digits import accuracy, find_export, labels_of, load_test_split

MIN_ACCURACY = 0.9


@pytest.fixture(scope="module")
def export_dir() -> Path:
    chosen = os.environ.get("MLBOOK_EXPORT")
    path = Path(chosen) if chosen else find_export()
    if path is None:
        pytest.skip("no digits export yet: run `mlbook export E001 --version wide`")
    return path


def test_export_loads_and_is_accurate(export_dir: Path) -> None:
    loaded = mlbook.load(export_dir)
    images, truth = load_test_split()
    assert len(truth) > 200
    assert accuracy(loaded, images, truth) > MIN_ACCURACY


def test_one_image_gives_one_label(export_dir: Path) -> None:
    loaded = mlbook.load(export_dir)
    images, truth = load_test_split()
    (label,) = labels_of(loaded.predict(images[0]))
    assert label in [str(digit) for digit in range(10)]
