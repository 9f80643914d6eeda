"""LabelMe JSON (wkentaro/labelme), import only.

One ``.json`` per image: ``rectangle`` shapes become boxes; ``polygon`` shapes become
their bounding box with the polygon kept as the box's segmentation; ``circle`` becomes
its bounding box (clipped to the image). Points and lines have no box and are kept in
the record attributes. Image-level ``flags`` set to true become the record's labels.
A shape without enough points (a one-point circle, a two-point polygon) is a problem,
never dropped in silence; so is an ``imagePath`` that leaves the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from mlbook.datasets.dataset import Dataset
from mlbook.datasets.formats._common import join_inside
from mlbook.datasets.metadata import Box, Record
from mlbook.datasets.problems import ErrorPolicy, decode_json, path_problem, read_bytes
from mlbook.datasets.validate import box_problems
from mlbook.errors import DatasetError, RecordError
from mlbook.progress import NullReporter, Reporter

__all__ = ["FILE_SUFFIX", "NAME", "detect", "read"]

NAME = "labelme"
FILE_SUFFIX = None
#: Shape type -> the fewest points that make a box of it.
_BOXED = {"rectangle": 2, "polygon": 3, "circle": 2}


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
    try:
        with open(files[0], "rb") as handle:
            head = handle.read(65536)
    except OSError:
        return False
    return b'"shapes"' in head and b'"imagePath"' in head


def _box(
    shape: _Shape, width: int | None, height: int | None
) -> tuple[Box | None, list[tuple[str, str]]]:
    """The shape's box (``None`` for shapes without one) and its problems."""
    kind = shape.shape_type or "polygon"
    points = shape.points
    fewest = _BOXED.get(kind)
    if fewest is None:
        return None, []
    if len(points) < fewest or (kind == "circle" and len(points) != 2):
        what = "a centre and a point on the circle" if kind == "circle" else f"{fewest} points"
        return None, [("points", f"a {kind} needs {what}, got {len(points)} point(s)")]
    attributes: dict[str, Any] = {}
    if shape.group_id is not None:
        attributes["group_id"] = shape.group_id
    if shape.flags:
        attributes["flags"] = shape.flags
    if kind == "circle":
        (cx, cy), (px, py) = points
        radius = ((px - cx) ** 2 + (py - cy) ** 2) ** 0.5
        x1, y1, x2, y2 = cx - radius, cy - radius, cx + radius, cy + radius
        x1, y1 = max(x1, 0.0), max(y1, 0.0)
        x2 = min(x2, float(width)) if width is not None else x2
        y2 = min(y2, float(height)) if height is not None else y2
    else:
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
    found = [("points", problem) for _, problem in box_problems(x1, y1, x2, y2, width, height)]
    if found:
        return None, found
    segmentation = [[c for p in points for c in p]] if kind == "polygon" else None
    box = Box(
        name=shape.label,
        x1=x1,
        y1=y1,
        x2=x2,
        y2=y2,
        segmentation=segmentation,
        attributes=attributes,
    )
    return box, []


def read(
    path: Path, reporter: Reporter | None = None, policy: ErrorPolicy | None = None
) -> Dataset:
    """Read one LabelMe JSON file or a folder of them."""
    reporter = reporter or NullReporter()
    policy = policy or ErrorPolicy()
    files = _files(path)
    if not files:
        raise DatasetError(f"{path}: no LabelMe .json files")
    root = path if path.is_dir() else path.parent
    records: list[Record] = []
    with reporter.task("Reading LabelMe", total=len(files)) as task:
        for json_path in files:
            task.advance()
            record = _record(json_path, policy)
            if record is not None:
                records.append(record)
    policy.finish(path)
    return Dataset.from_records(records, name=root.resolve().name, root=root, source="LabelMe")


def _record(json_path: Path, policy: ErrorPolicy) -> Record | None:
    data = read_bytes(json_path, "LabelMe file")
    try:
        parsed = decode_json(data, json_path, _File, "LabelMe JSON")
    except RecordError as exc:
        policy.reject_error(exc)
        return None
    width, height = parsed.imageWidth, parsed.imageHeight
    found: list[tuple[str, str]] = []
    for name, value in (("imageWidth", width), ("imageHeight", height)):
        if value is not None and value <= 0:
            found.append((name, f"must be positive ({value})"))
    width = width if width and width > 0 else None
    height = height if height and height > 0 else None
    file = join_inside("", parsed.imagePath.replace("\\", "/"))
    problem = path_problem(file)
    if problem is not None:
        found.append(("imagePath", problem))
    boxes: list[Box] = []
    other: list[dict[str, Any]] = []
    for index, shape in enumerate(parsed.shapes):
        box, problems = _box(shape, width, height)
        found += [(f"shapes[{index}].{field}", message) for field, message in problems]
        if box is not None:
            boxes.append(box)
        elif not problems:
            other.append(msgspec.to_builtins(shape))
    if policy.reject(json_path, None, found):
        return None
    return Record(
        id=json_path.stem,
        file=file,
        width=width,
        height=height,
        labels=[k for k, v in (parsed.flags or {}).items() if v is True],
        boxes=boxes,
        attributes={"shapes": other} if other else {},
    )
