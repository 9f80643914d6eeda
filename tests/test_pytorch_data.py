"""The one torch Dataset over mlbook records: labels or detection targets, channels, ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from mlbook import pytorch as mt  # noqa: E402
from mlbook.datasets import Box, ClassInfo, Dataset, DatasetInfo, Record, open_dataset  # noqa: E402
from mlbook.datasets.torch import TorchDataset, collate  # noqa: E402
from mlbook.errors import DatasetError  # noqa: E402


def write(root: Path, labels: list[list[str]], splits: list[str], mode: str = "RGB") -> Path:
    (root / "images").mkdir(parents=True)
    records = []
    for index, (names, split) in enumerate(zip(labels, splits, strict=True)):
        pixels = np.full((4, 6, 3), index * 40, dtype=np.uint8)
        pixels[0, 0] = (255, 0, 0)
        Image.fromarray(pixels).convert(mode).save(root / "images" / f"{index}.png")
        records.append(Record(id=str(index), file=f"images/{index}.png", labels=names, split=split))
    classes = [
        ClassInfo(id=7, name="cat"),
        ClassInfo(id=3, name="dog"),
        ClassInfo(id=5, name="owl"),
    ]
    Dataset(DatasetInfo(name="pets", classes=classes), records, root).save(root)
    return root


def test_one_class_from_both_entry_points() -> None:
    assert mt.TorchDataset is TorchDataset
    assert not hasattr(mt, "ClassificationDataset")


def test_images_and_labels_in_the_dataset_encoding(tmp_path: Path) -> None:
    root = write(tmp_path / "pets", [["cat"], ["dog"], ["owl"], ["dog"]], ["train"] * 3 + ["test"])
    train = open_dataset(root).torch("train")
    assert isinstance(train, TorchDataset) and train.encoding == open_dataset(root).encoding
    assert len(train) == 3 and train.labels == [7, 3, 5] and train.channels == 3
    image, label = train[1]
    assert image.shape == (3, 4, 6) and image.dtype == torch.float32 and label == 3
    assert float(image[0, 0, 0]) == 1.0 and float(image[1, 0, 0]) == 0.0
    assert abs(float(image[0, 1, 1]) - 40 / 255) < 1e-6
    images, labels = train.tensors()
    assert images.shape == (3, 3, 4, 6) and labels.tolist() == [7, 3, 5]
    gray = TorchDataset(root, "test", channels=1)
    assert gray[0][0].shape == (1, 4, 6)
    loader = torch.utils.data.DataLoader(train, batch_size=2)
    batch_images, batch_labels = next(iter(loader))
    assert batch_images.shape == (2, 3, 4, 6) and batch_labels.tolist() == [7, 3]


def test_channels_default_to_the_image_mode(tmp_path: Path) -> None:
    """Grayscale PNGs (the digits example) give 1 channel; channels=3 still gives RGB."""
    root = write(tmp_path / "gray", [["cat"], ["dog"]], ["train"] * 2, mode="L")
    gray = open_dataset(root).torch()
    assert gray.channels == 1 and gray[0][0].shape == (1, 4, 6)
    assert gray.tensors()[0].shape == (2, 1, 4, 6)
    assert open_dataset(root).torch(channels=3)[0][0].shape == (3, 4, 6)
    with pytest.raises(DatasetError, match=r"^channels must be 1 or 3, got 4$"):
        open_dataset(root).torch(channels=4)
    with pytest.raises(DatasetError, match=r"^target must be 'label' or 'detection', got 'box'$"):
        open_dataset(root).torch(target="box")  # type: ignore[arg-type]


def test_ids_one_rule_for_subsets_and_start(tmp_path: Path) -> None:
    root = write(tmp_path / "pets", [["cat"], ["dog"], ["owl"]], ["train"] * 3)
    dataset = open_dataset(root)
    subset = dataset.torch(classes=["owl", "cat"], cache=True, transform=lambda t: t * 2)
    assert [r.id for r in subset.records] == ["0", "2"]
    assert subset.encoding.to_dict() == {"owl": 0, "cat": 1}  # dataset id order, from 0
    assert subset.labels == [1, 0]
    first = subset.image(0)
    assert subset.image(0) is first  # cached
    assert torch.equal(subset[0][0], first * 2)
    assert dataset.torch(classes=["owl", "cat"], start=1).labels == [2, 1]
    everything = dataset.torch(start=1)  # all classes, numbered from 1
    assert everything.encoding.to_dict() == {"dog": 1, "owl": 2, "cat": 3}
    given = dataset.torch(classes={"cat": 10, "dog": 20})  # an encoding is used as it is
    assert given.labels == [10, 20]


def test_records_with_several_or_no_labels_are_refused(tmp_path: Path) -> None:
    root = write(tmp_path / "pets", [["cat", "dog"], []], ["train", "train"])
    with pytest.raises(
        DatasetError,
        match=r"pets: record '0' \(images/0.png\) has 2 labels \['cat', 'dog'\]; "
        "target='label' needs exactly one: fix the record, choose a class subset, "
        "or use target='detection'",
    ):
        TorchDataset(root)
    only_cats = TorchDataset(root, classes=["cat"])  # the subset makes it one label
    assert only_cats.labels == [0]
    (root / "images" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"0.png: cannot read image of record '0'"):
        only_cats[0]


def test_detection_targets_with_start_one(tmp_path: Path) -> None:
    root = write(tmp_path / "pets", [["cat", "dog"], ["owl"]], ["train", "train"])
    dataset = open_dataset(root)
    boxed = [
        Record(
            id=r.id,
            file=r.file,
            labels=r.labels,
            split=r.split,
            boxes=[Box(name=n, x1=0, y1=0, x2=2 + i, y2=3) for i, n in enumerate(r.labels)],
        )
        for r in dataset
    ]
    Dataset(dataset.info, boxed, root).save(root)
    detection = open_dataset(root).torch(target="detection", start=1)
    image, target = detection[0]
    assert image.shape == (3, 4, 6)
    assert target["labels"].tolist() == [3, 1]  # cat, dog in the dataset's id order from 1
    assert target["boxes"].tolist() == [[0, 0, 2, 3], [0, 0, 3, 3]]
    assert target["area"].tolist() == [6.0, 9.0] and target["image_id"] == 0
    images, targets = collate([detection[0], detection[1]])
    assert len(images) == 2 and targets[1]["labels"].tolist() == [2]
    flipped = open_dataset(root).torch(
        target="detection", transform=lambda img, tgt: (img.flip(-1), tgt)
    )
    assert torch.equal(flipped[0][0], image.flip(-1))
    with pytest.raises(
        DatasetError, match=r"tensors\(\) stacks class ids; it needs target='label'"
    ):
        detection.tensors()
