"""A ``torch.utils.data.Dataset`` over mlbook records for image classification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset as _TorchDataset

__all__ = ["ClassificationDataset"]


class ClassificationDataset(_TorchDataset[tuple[torch.Tensor, int]]):
    """Image classification over mlbook records: ``(image, class id)`` pairs.

    Images are decoded with Pillow in ``mode`` (``"L"`` grayscale, ``"RGB"``) as
    float tensors ``C x H x W`` in 0..1; the class id is the record's one label in
    ``self.encoding`` (the dataset's fixed encoding, or the class subset numbered
    from ``start``). Save the encoding next to the model so predictions decode.
    For detection, use ``Dataset.torch()`` (:mod:`mlbook.datasets.torch`).

    Args:
        dataset: an opened dataset or its directory.
        split: one split or several (``None``: all records).
        classes: a class subset; records with none of these labels are left out.
        mode: the Pillow mode images are converted to.
        transform: called on each image tensor.
        cache: keep decoded images in memory (small datasets, several epochs).

    Raises:
        DatasetError: a record that has no label or more than one (of the subset).
    """

    def __init__(
        self,
        dataset: Any,
        split: str | list[str] | None = None,
        classes: Any = None,
        *,
        start: int = 0,
        mode: str = "RGB",
        transform: Any = None,
        cache: bool = False,
    ) -> None:
        from mlbook.datasets import open_dataset
        from mlbook.errors import DatasetError

        self.dataset = open_dataset(dataset) if isinstance(dataset, str | Path) else dataset
        if classes is None:
            self.encoding = self.dataset.encoding
        else:
            self.encoding = self.dataset.subset(classes, start=start)
        chosen = None if classes is None else self.encoding
        self.records = self.dataset.records(split=split, classes=chosen)
        self.labels: list[int] = []
        for record in self.records:
            if len(record.labels) != 1:
                raise DatasetError(
                    f"{self.dataset.name}: record {record.id!r} ({record.file}) has "
                    f"{len(record.labels)} labels {record.labels}; classification needs "
                    "exactly one: fix the record or choose a class subset"
                )
            self.labels.append(self.encoding.encode(record.labels[0]))
        self.mode = mode
        self.transform = transform
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.records)

    def image(self, index: int) -> torch.Tensor:
        """The decoded image of record ``index`` (before ``transform``)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        import numpy as np
        from PIL import Image

        from mlbook.errors import DatasetError

        path = self.dataset.path_of(self.records[index].file)
        try:
            with Image.open(path) as opened:
                array = np.asarray(opened.convert(self.mode), dtype=np.float32) / 255.0
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read the image ({exc})") from exc
        tensor = torch.from_numpy(array.reshape(array.shape[0], array.shape[1], -1))
        tensor = tensor.permute(2, 0, 1).contiguous()
        if self._cache is not None:
            self._cache[index] = tensor
        return tensor

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images stacked (``N x C x H x W``) and their labels (``N``, int64).

        For datasets that fit in memory: batch them with a ``TensorDataset``.
        """
        if not self.records:
            return torch.empty(0), torch.empty(0, dtype=torch.int64)
        images = torch.stack([self[index][0] for index in range(len(self))])
        return images, torch.tensor(self.labels, dtype=torch.int64)
