"""Dataset statistics: images per split, boxes and labels per class, box sizes and shapes."""

from __future__ import annotations

import io
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlbook._fs import atomic_write_bytes
from mlbook.datasets.dataset import Dataset
from mlbook.errors import DatasetError

__all__ = ["ASPECT_BINS", "SIZE_BINS", "DatasetStats", "compute_stats", "plot_stats"]

#: Upper edges of the box-size bins, in pixels of sqrt(area) (COCO: small < 32 <= medium < 96).
SIZE_BINS = (8, 16, 32, 64, 96, 128, 256, 512, math.inf)
#: Upper edges of the aspect-ratio (width / height) bins.
ASPECT_BINS = (0.25, 0.5, 0.75, 1.0, 1.33, 2.0, 4.0, math.inf)


def _bin_labels(edges: tuple[float, ...]) -> list[str]:
    labels = []
    low = 0.0
    for high in edges:
        labels.append(f"{low:g}-{high:g}" if high != math.inf else f">={low:g}")
        low = high
    return labels


@dataclass(slots=True)
class DatasetStats:
    """Counts that describe a dataset."""

    name: str
    records: int = 0
    boxes: int = 0
    images_per_split: dict[str, int] = field(default_factory=dict)
    boxes_per_class: dict[str, int] = field(default_factory=dict)
    labels_per_class: dict[str, int] = field(default_factory=dict)
    images_per_class: dict[str, int] = field(default_factory=dict)
    box_sizes: dict[str, int] = field(default_factory=dict)
    box_aspects: dict[str, int] = field(default_factory=dict)
    without_annotations: int = 0
    crowd_boxes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "name": self.name,
            "records": self.records,
            "boxes": self.boxes,
            "images_per_split": self.images_per_split,
            "boxes_per_class": self.boxes_per_class,
            "labels_per_class": self.labels_per_class,
            "images_per_class": self.images_per_class,
            "box_sizes": self.box_sizes,
            "box_aspects": self.box_aspects,
            "without_annotations": self.without_annotations,
            "crowd_boxes": self.crowd_boxes,
        }


def _bin(value: float, edges: tuple[float, ...]) -> int:
    for index, high in enumerate(edges):
        if value < high:
            return index
    return len(edges) - 1


def compute_stats(dataset: Dataset) -> DatasetStats:
    """Count what is in ``dataset`` (classes listed in id order, then any unknown names)."""
    splits: Counter[str] = Counter()
    boxes: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    images: Counter[str] = Counter()
    sizes = [0] * len(SIZE_BINS)
    aspects = [0] * len(ASPECT_BINS)
    stats = DatasetStats(name=dataset.name)
    for record in dataset:
        stats.records += 1
        splits[record.split or "(none)"] += 1
        if not (record.boxes or record.labels or record.counts):
            stats.without_annotations += 1
        present = set(record.labels) | {b.name for b in record.boxes} | set(record.counts)
        images.update(present)
        labels.update(record.labels)
        for box in record.boxes:
            stats.boxes += 1
            boxes[box.name] += 1
            stats.crowd_boxes += box.iscrowd
            width, height = box.x2 - box.x1, box.y2 - box.y1
            if width > 0 and height > 0:
                sizes[_bin(math.sqrt(width * height), SIZE_BINS)] += 1
                aspects[_bin(width / height, ASPECT_BINS)] += 1
    order = dataset.classes + sorted(set(boxes) | set(labels) | set(images) - set(dataset.classes))
    order = list(dict.fromkeys(order))
    stats.images_per_split = dict(sorted(splits.items()))
    stats.boxes_per_class = {n: boxes[n] for n in order if boxes[n]}
    stats.labels_per_class = {n: labels[n] for n in order if labels[n]}
    stats.images_per_class = {n: images[n] for n in order}
    stats.box_sizes = dict(zip(_bin_labels(SIZE_BINS), sizes, strict=True))
    stats.box_aspects = dict(zip(_bin_labels(ASPECT_BINS), aspects, strict=True))
    return stats


def plot_stats(stats: DatasetStats, path: Path | str) -> Path:
    """Draw boxes per class, images per split, box sizes and aspects into one PNG.

    Raises:
        DatasetError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DatasetError(
            "--plot needs matplotlib; install it with `pip install mlbook[plot]`"
        ) from None
    per_class = stats.boxes_per_class or stats.labels_per_class
    class_title = "boxes per class" if stats.boxes_per_class else "labels per class"
    if len(per_class) > 30:
        per_class = dict(sorted(per_class.items(), key=lambda kv: -kv[1])[:30])
        class_title += " (top 30)"
    figure, axes = plt.subplots(2, 2, figsize=(12, 8))
    panels = [
        (axes[0][0], per_class, class_title),
        (axes[0][1], stats.images_per_split, "images per split"),
        (axes[1][0], stats.box_sizes, "box size (sqrt of area, px)"),
        (axes[1][1], stats.box_aspects, "box aspect (width / height)"),
    ]
    for axis, data, title in panels:
        axis.bar(range(len(data)), list(data.values()), color="#4c72b0")
        axis.set_xticks(range(len(data)))
        axis.set_xticklabels(list(data), rotation=90 if len(data) > 8 else 0, fontsize=7)
        axis.set_title(title)
    figure.suptitle(f"{stats.name}: {stats.records} images, {stats.boxes} boxes")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
