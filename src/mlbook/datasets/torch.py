"""A ``torch.utils.data.Dataset`` in the shape torchvision detection models expect.

Imported only when used (``Dataset.torch()``); needs the ``torch`` extra.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset as _TorchBase

from mlbook.datasets.loaders import load_image

if TYPE_CHECKING:
    from mlbook.datasets.dataset import ClassSubset, Dataset

__all__ = ["TorchDataset", "collate"]


class TorchDataset(_TorchBase[tuple[Any, dict[str, Any]]]):
    """Image tensors (float, CxHxW, 0..1) and targets ``{boxes, labels, image_id, area, iscrowd}``.

    Labels use ``self.encoding``: the class subset numbered from ``start`` (default 1,
    since torchvision detectors keep 0 for the background). Save it next to the model
    with ``dataset.encoding.save(path / "labels.json")``.
    """

    def __init__(
        self,
        dataset: Dataset,
        split: str | Iterable[str] | None = None,
        classes: ClassSubset | None = None,
        start: int = 1,
        transform: Callable[[Any, dict[str, Any]], tuple[Any, dict[str, Any]]] | None = None,
    ) -> None:
        self.dataset = dataset
        chosen = classes if classes is not None else dataset.classes
        self.encoding = dataset.subset(chosen, start=start)
        self.records = dataset.records(split=split, classes=self.encoding)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        record = self.records[index]
        image = load_image(self.dataset, record)
        array = np.asarray(image, dtype=np.uint8)
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
        boxes = torch.tensor(
            [(b.x1, b.y1, b.x2, b.y2) for b in record.boxes], dtype=torch.float32
        ).reshape(-1, 4)
        target: dict[str, Any] = {
            "boxes": boxes,
            "labels": torch.tensor(
                [self.encoding.encode(b.name) for b in record.boxes], dtype=torch.int64
            ),
            "image_id": index,
            "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
            "iscrowd": torch.tensor([int(b.iscrowd) for b in record.boxes], dtype=torch.int64),
        }
        if self.transform is not None:
            return self.transform(tensor, target)
        return tensor, target


def collate(batch: list[tuple[Any, dict[str, Any]]]) -> tuple[list[Any], list[dict[str, Any]]]:
    """A ``collate_fn`` for detection batches: lists of images and targets, unstacked."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
