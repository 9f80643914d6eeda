"""The ``torch.utils.data.Dataset`` over mlbook records, for classification or detection,
of images or of features (records that are numbers: ``features`` or a table row).

Imported only when used (``Dataset.torch()``, ``mlbook.pytorch.TorchDataset``);
needs the ``torch`` extra.

Class ids are the ids of one :class:`~mlbook.datasets.subsets.ClassEncoding`,
``dataset.encoding``:

- no ``classes`` and no ``start``: the dataset's own encoding (``dataset.json``);
- ``classes=["cat", "dog"]`` and/or ``start=N``: those classes (all without
  ``classes``) numbered contiguously in the dataset's id order from ``start``
  (default 0);
- ``classes=`` a ``ClassEncoding`` or a name -> id dict: exactly those ids.

torchvision's detection models keep 0 for the background: pass ``start=1`` with
``target="detection"``. Save ``ds.encoding`` next to the model
(``ds.encoding.save(path / "labels.json")``) so predictions decode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset as _TorchBase

from mlbook.datasets.loaders import image_mode, load_image
from mlbook.errors import DatasetError

if TYPE_CHECKING:
    from mlbook.datasets.dataset import ClassSubset, Dataset

__all__ = ["Inputs", "Target", "TorchDataset", "collate"]

#: What an item's second element is: the class id, or torchvision's detection dict.
Target = Literal["label", "detection"]
#: What an item's first element is: the decoded image, or the record's features.
Inputs = Literal["image", "features"]

# Pillow modes with one band of intensity (an alpha band is dropped)
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


class TorchDataset(_TorchBase[tuple[torch.Tensor, Any]]):
    """Images as float tensors ``C x H x W`` in 0..1, or features as float tensors ``F``,
    with a class id or a detection target.

    - ``target="label"`` (classification): items are ``(image, class id)``, or
      ``(features, class id)`` for records of numbers; every record must have exactly
      one label (of the class subset).
    - ``target="detection"``: items are ``(image, {"boxes", "labels", "image_id",
      "area", "iscrowd"})`` as torchvision detection models expect; batch them with
      :func:`collate`.

    Args:
        dataset: an opened :class:`~mlbook.datasets.dataset.Dataset` or its directory.
        split: one split or several (``None``: all records).
        classes: a class subset: names, or an encoding; records with none of these
            classes are left out.
        target: ``"label"`` or ``"detection"``.
        start: the first id when numbering the classes (see the module docstring).
        channels: 1 (grayscale) or 3 (RGB); default: from the mode of the first
            image, then the same for every image.
        transform: ``transform(image)`` for labels, ``transform(image, target)``
            (returning both) for detection.
        cache: keep decoded images in memory (small datasets, several epochs).
        inputs: ``"image"`` or ``"features"``; default: features when every record
            chosen has them, else images.

    Raises:
        DatasetError: a bad ``target``, ``channels`` or ``inputs``, an unknown class or
            split, (labels) a record with no label or several, (features) a record
            without features or ``target="detection"``.
    """

    def __init__(
        self,
        dataset: Dataset | Path | str,
        split: str | Iterable[str] | None = None,
        classes: ClassSubset | None = None,
        *,
        target: Target = "label",
        start: int | None = None,
        channels: int | None = None,
        transform: Callable[..., Any] | None = None,
        cache: bool = False,
        inputs: Inputs | None = None,
    ) -> None:
        from mlbook.datasets.dataset import open_dataset

        if target not in ("label", "detection"):
            raise DatasetError(f"target must be 'label' or 'detection', got {target!r}")
        if inputs not in (None, "image", "features"):
            raise DatasetError(f"inputs must be 'image' or 'features', got {inputs!r}")
        if channels not in (None, 1, 3):
            raise DatasetError(f"channels must be 1 or 3, got {channels!r}")
        self.dataset = open_dataset(dataset) if isinstance(dataset, str | Path) else dataset
        if classes is None and start is None:
            self.encoding = self.dataset.encoding
        else:
            chosen = self.dataset.classes if classes is None else classes
            self.encoding = self.dataset.subset(chosen, start=start or 0)
        subset = None if classes is None else self.encoding
        self.records = self.dataset.records(split=split, classes=subset)
        if inputs is None:
            with_features = bool(self.records) and all(r.features is not None for r in self.records)
            inputs = "features" if with_features else "image"
        self.inputs: Inputs = inputs
        if inputs == "features":
            if target == "detection":
                raise DatasetError("target='detection' needs images; features have no boxes")
            missing = next((r for r in self.records if r.features is None), None)
            if missing is not None:
                raise DatasetError(
                    f"{self.dataset.name}: record {missing.id!r} has no features; "
                    "inputs='features' needs them in every record"
                )
        self.target = target
        self.transform = transform
        self._channels = channels
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None
        self.labels: list[int] = []
        if target == "label":
            self.labels = [self._label(record) for record in self.records]

    def _label(self, record: Any) -> int:
        if len(record.labels) != 1:
            raise DatasetError(
                f"{self.dataset.name}: record {record.id!r} ({record.file or 'features'}) has "
                f"{len(record.labels)} labels {record.labels}; target='label' needs exactly "
                "one: fix the record, choose a class subset, or use target='detection'"
            )
        return self.encoding.encode(record.labels[0])

    @property
    def channels(self) -> int:
        """Channels of every image: as given, else from the first image's mode."""
        if self._channels is None:
            mode = image_mode(self.dataset, self.records[0]) if self.records else "RGB"
            self._channels = 1 if mode in _GRAY_MODES else 3
        return self._channels

    def __len__(self) -> int:
        return len(self.records)

    def features(self, index: int) -> torch.Tensor:
        """The features of record ``index`` as a float32 tensor (before ``transform``)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        values = self.dataset.features(self.records[index])
        tensor = torch.from_numpy(np.array(values, dtype=np.float32))
        if self._cache is not None:
            self._cache[index] = tensor
        return tensor

    def image(self, index: int) -> torch.Tensor:
        """The decoded image of record ``index`` (before ``transform``)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        mode = "L" if self.channels == 1 else "RGB"
        decoded = load_image(self.dataset, self.records[index], mode)
        array = np.asarray(decoded, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array.reshape(array.shape[0], array.shape[1], -1))
        tensor = tensor.permute(2, 0, 1).contiguous()
        if self._cache is not None:
            self._cache[index] = tensor
        return tensor

    def detection_target(self, index: int) -> dict[str, Any]:
        """The torchvision detection target of record ``index``."""
        record = self.records[index]
        boxes = torch.tensor(
            [(b.x1, b.y1, b.x2, b.y2) for b in record.boxes], dtype=torch.float32
        ).reshape(-1, 4)
        return {
            "boxes": boxes,
            "labels": torch.tensor(
                [self.encoding.encode(b.name) for b in record.boxes], dtype=torch.int64
            ),
            "image_id": index,
            "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
            "iscrowd": torch.tensor([int(b.iscrowd) for b in record.boxes], dtype=torch.int64),
        }

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        image = self.features(index) if self.inputs == "features" else self.image(index)
        if self.target == "detection":
            target = self.detection_target(index)
            if self.transform is not None:
                transformed: tuple[torch.Tensor, Any] = self.transform(image, target)
                return transformed
            return image, target
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images stacked (``N x C x H x W``), or all features (``N x F``), and their
        labels (``N``, int64).

        For classification datasets that fit in memory: batch them with a
        ``TensorDataset``.

        Raises:
            DatasetError: a detection dataset (its targets do not stack).
        """
        if self.target != "label":
            raise DatasetError("tensors() stacks class ids; it needs target='label'")
        if not self.records:
            return torch.empty(0), torch.empty(0, dtype=torch.int64)
        images = torch.stack([self[index][0] for index in range(len(self))])
        return images, torch.tensor(self.labels, dtype=torch.int64)


def collate(batch: list[tuple[Any, dict[str, Any]]]) -> tuple[list[Any], list[dict[str, Any]]]:
    """A ``collate_fn`` for detection batches: lists of images and targets, unstacked."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
