"""mlbook.pytorch.ClassificationDataset: a torch Dataset over mlbook records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from mlbook.datasets import ClassInfo, Dataset, DatasetInfo, Record  # noqa: E402
from mlbook.errors import DatasetError  # noqa: E402
from mlbook.pytorch import ClassificationDataset  # noqa: E402


def write(root: Path, labels: list[list[str]], splits: list[str]) -> Path:
    (root / "images").mkdir(parents=True)
    records = []
    for index, (names, split) in enumerate(zip(labels, splits, strict=True)):
        pixels = np.full((4, 6, 3), index * 40, dtype=np.uint8)
        pixels[0, 0] = (255, 0, 0)
        Image.fromarray(pixels).save(root / "images" / f"{index}.png")
        records.append(Record(id=str(index), file=f"images/{index}.png", labels=names, split=split))
    classes = [
        ClassInfo(id=7, name="cat"),
        ClassInfo(id=3, name="dog"),
        ClassInfo(id=5, name="owl"),
    ]
    Dataset(DatasetInfo(name="pets", classes=classes), records, root).save(root)
    return root


def test_images_and_labels_in_the_dataset_encoding(tmp_path: Path) -> None:
    root = write(tmp_path / "pets", [["cat"], ["dog"], ["owl"], ["dog"]], ["train"] * 3 + ["test"])
    train = ClassificationDataset(root, "train")
    assert len(train) == 3 and train.labels == [7, 3, 5]
    image, label = train[1]
    assert image.shape == (3, 4, 6) and image.dtype == torch.float32 and label == 3
    assert float(image[0, 0, 0]) == 1.0 and float(image[1, 0, 0]) == 0.0
    assert abs(float(image[0, 1, 1]) - 40 / 255) < 1e-6
    images, labels = train.tensors()
    assert images.shape == (3, 3, 4, 6) and labels.tolist() == [7, 3, 5]
    gray = ClassificationDataset(root, "test", mode="L")
    assert gray[0][0].shape == (1, 4, 6)
    loader = torch.utils.data.DataLoader(train, batch_size=2)
    batch_images, batch_labels = next(iter(loader))
    assert batch_images.shape == (2, 3, 4, 6) and batch_labels.tolist() == [7, 3]


def test_class_subset_cache_and_transform(tmp_path: Path) -> None:
    root = write(tmp_path / "pets", [["cat"], ["dog"], ["owl"]], ["train"] * 3)
    subset = ClassificationDataset(
        root, classes=["owl", "cat"], start=1, cache=True, transform=lambda t: t * 2
    )
    assert [r.id for r in subset.records] == ["0", "2"]
    assert subset.encoding.to_dict() == {"owl": 1, "cat": 2}  # dataset id order, from 1
    assert subset.labels == [2, 1]
    first = subset.image(0)
    assert subset.image(0) is first  # cached
    assert torch.equal(subset[0][0], first * 2)
    assert ClassificationDataset(root, "train", classes=["dog"]).tensors()[1].tolist() == [0]


def test_records_with_several_or_no_labels_are_refused(tmp_path: Path) -> None:
    root = write(tmp_path / "pets", [["cat", "dog"], []], ["train", "train"])
    with pytest.raises(
        DatasetError,
        match=r"pets: record '0' \(images/0.png\) has 2 labels \['cat', 'dog'\]; "
        "classification needs exactly one",
    ):
        ClassificationDataset(root)
    only_cats = ClassificationDataset(root, classes=["cat"])  # the subset makes it one label
    assert only_cats.labels == [0]
    (root / "images" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"0.png: cannot read the image"):
        only_cats[0]
