"""LabelMe JSON (wkentaro/labelme), import only.

One ``.json`` per image: ``rectangle`` shapes become boxes; ``polygon`` shapes become
their bounding box with the polygon kept as the box's segmentation; ``circle`` becomes
its bounding box. Points and lines have no box and are kept in the record attributes.
Image-level ``flags`` set to true become the record's labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from mlbook.datasets.dataset import Dataset
from mlbook.datasets.formats._common import relative_to
from mlbook.datasets.metadata import Box, Record
from mlbook.errors import DatasetError, RecordError
from mlbook.progress import NullReporter, Reporter

__all__ = ["NAME", "detect", "read"]

NAME = "labelme"


class _Shape(msgspec.Struct):
    label: str
    points: list[tuple[float, float]]
    shape_type: str | None = "polygon"
    group_id: int | None = None
    flags: dict[str, Any] | None = None


class _File(msgspec.Struct):
    shapes: list[_Shape]
    imagePath: str
    imageWidth: int | None = None
    imageHeight: int | None = None
    flags: dict[str, Any] | None = None
    version: str | None = None


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.glob("*.json"))


def detect(path: Path) -> bool:
    """True when the (first) JSON file has LabelMe's ``shapes`` and ``imagePath``."""
    files = _files(path)
    if not files:
        return False
    head = files[0].read_bytes()[:65536]
    return b'"shapes"' in head and b'"imagePath"' in head


def _box(shape: _Shape, json_path: Path, index: int) -> Box | None:
    points = shape.points
    kind = shape.shape_type or "polygon"
    if kind == "circle" and len(points) == 2:
        (cx, cy), (px, py) = points
        radius = ((px - cx) ** 2 + (py - cy) ** 2) ** 0.5
        return Box(name=shape.label, x1=cx - radius, y1=cy - radius, x2=cx + radius, y2=cy + radius)
    if kind not in ("rectangle", "polygon") or len(points) < 2:
        return None
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    attributes: dict[str, Any] = {}
    if shape.group_id is not None:
        attributes["group_id"] = shape.group_id
    if shape.flags:
        attributes["flags"] = shape.flags
    segmentation = [[c for p in points for c in p]] if kind == "polygon" else None
    return Box(
        name=shape.label,
        x1=min(xs),
        y1=min(ys),
        x2=max(xs),
        y2=max(ys),
        segmentation=segmentation,
        attributes=attributes,
    )


def read(path: Path, reporter: Reporter | None = None) -> Dataset:
    """Read one LabelMe JSON file or a folder of them."""
    reporter = reporter or NullReporter()
    files = _files(path)
    if not files:
        raise DatasetError(f"{path}: no LabelMe .json files")
    root = path if path.is_dir() else path.parent
    records: list[Record] = []
    with reporter.task("Reading LabelMe", total=len(files)) as task:
        for json_path in files:
            try:
                parsed = msgspec.json.decode(json_path.read_bytes(), type=_File)
            except msgspec.DecodeError as exc:
                problem, _, where = str(exc).partition(" - at `")
                field = where.rstrip("`").removeprefix("$").lstrip(".")
                raise RecordError(json_path, None, field, f"not LabelMe JSON: {problem}") from exc
            boxes: list[Box] = []
            other: list[dict[str, Any]] = []
            for index, shape in enumerate(parsed.shapes):
                box = _box(shape, json_path, index)
                if box is None:
                    other.append(msgspec.to_builtins(shape))
                else:
                    boxes.append(box)
            image = (json_path.parent / parsed.imagePath.replace("\\", "/")).resolve()
            records.append(
                Record(
                    id=json_path.stem,
                    file=relative_to(image, root),
                    width=parsed.imageWidth,
                    height=parsed.imageHeight,
                    labels=[k for k, v in (parsed.flags or {}).items() if v is True],
                    boxes=boxes,
                    attributes={"shapes": other} if other else {},
                )
            )
            task.advance()
    return Dataset.from_records(records, name=root.resolve().name, root=root, source="LabelMe")
