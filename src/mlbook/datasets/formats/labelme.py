"""LabelMe JSON (wkentaro/labelme), both ways.

Read: one ``.json`` per image. ``rectangle`` shapes become boxes; ``polygon`` shapes
their bounding box with the polygon kept as the box's segmentation; ``circle`` its
bounding box (clipped to the image) with the circle's centre and rim point kept in the
box attributes (``labelme``), so that it is written back as a circle. Points and lines
have no box and are kept in the record attributes (``shapes``). Image-level ``flags``
set to true become the record's labels (all the flags are kept in the attributes when
some are false); ``group_id``, shape ``flags`` and
``description`` go to the box attributes. An image embedded as ``imageData`` (base64)
is used when ``imagePath`` names no file beside the JSON: writers then write it out as
a file. A shape without enough points (a one-point circle, a two-point polygon) is a
problem, never dropped in silence; so is an ``imagePath`` that leaves the folder (unless
the image is embedded: then its base name is used).

Write: ``<id>.json`` per record in the target folder with ``imagePath`` the record's
``file`` (the image comes along to that path) and ``imageData`` null.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from pathlib import Path
from typing import Any

import msgspec

from mlbook.datasets.dataset import Dataset
from mlbook.datasets.formats._common import Output, join_inside
from mlbook.datasets.metadata import Box, Record
from mlbook.datasets.problems import (
    ErrorPolicy,
    decode_json,
    name_problem,
    path_problem,
    read_bytes,
)
from mlbook.datasets.validate import box_problems
from mlbook.errors import DatasetError, RecordError
from mlbook.progress import NullReporter, Reporter

__all__ = ["FILE_SUFFIX", "NAME", "VERSION", "detect", "read", "write"]

NAME = "labelme"
FILE_SUFFIX = None
#: The ``version`` written into LabelMe files (the file layout of labelme 5).
VERSION = "5.5.0"
#: Shape type -> the fewest points that make a box of it.
_BOXED = {"rectangle": 2, "polygon": 3, "circle": 2}


class _Shape(msgspec.Struct):
    label: str
    points: list[tuple[float, float]]
    shape_type: str | None = "polygon"
    group_id: int | None = None
    flags: dict[str, Any] | None = None
    description: str | None = None


class _File(msgspec.Struct):
    shapes: list[_Shape]
    imagePath: str
    imageData: str | None = None
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
    if len(points) < fewest or (kind in ("circle", "rectangle") and len(points) != 2):
        what = {"circle": "a centre and a point on the circle", "rectangle": "2 corners"}
        needs = what.get(kind, f"{fewest} points")
        return None, [("points", f"a {kind} needs {needs}, got {len(points)} point(s)")]
    attributes: dict[str, Any] = {}
    if shape.group_id is not None:
        attributes["group_id"] = shape.group_id
    if shape.flags:
        attributes["flags"] = shape.flags
    if shape.description:
        attributes["description"] = shape.description
    if kind == "circle":
        (cx, cy), (px, py) = points
        radius = ((px - cx) ** 2 + (py - cy) ** 2) ** 0.5
        x1, y1, x2, y2 = cx - radius, cy - radius, cx + radius, cy + radius
        x1, y1 = max(x1, 0.0), max(y1, 0.0)
        x2 = min(x2, float(width)) if width is not None else x2
        y2 = min(y2, float(height)) if height is not None else y2
        attributes["labelme"] = {"shape_type": "circle", "points": [[cx, cy], [px, py]]}
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
    embedded: dict[str, bytes] = {}
    with reporter.task("Reading LabelMe", total=len(files)) as task:
        for json_path in files:
            task.advance()
            record = _record(json_path, root, policy, embedded)
            if record is not None:
                records.append(record)
    policy.finish(path)
    dataset = Dataset.from_records(records, name=root.resolve().name, root=root, source="LabelMe")
    dataset.embedded = embedded
    return dataset


def _image_data(
    parsed: _File, found: list[tuple[str, str]], file: str, embedded: dict[str, bytes]
) -> None:
    """Keep the embedded image of a file whose image is not beside it."""
    try:
        data = base64.b64decode(parsed.imageData or "", validate=True)
    except (binascii.Error, ValueError):
        found.append(("imageData", "not base64 text; save the file again with LabelMe"))
        return
    if data:
        embedded[file] = data


def _record(
    json_path: Path, root: Path, policy: ErrorPolicy, embedded: dict[str, bytes]
) -> Record | None:
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
    image_path = parsed.imagePath.replace("\\", "/")
    file = join_inside("", image_path)
    problem = path_problem(file)
    if problem is not None and parsed.imageData:
        base = posixpath.basename(image_path.rstrip("/")) or f"{json_path.stem}.jpg"
        file = base if path_problem(base) is None else f"{json_path.stem}.jpg"
        problem = None
    if problem is not None:
        found.append(("imagePath", problem))
    elif parsed.imageData and not (root / file).is_file():
        _image_data(parsed, found, file, embedded)
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
        embedded.pop(file, None)
        return None
    flags = parsed.flags or {}
    attributes: dict[str, Any] = {"shapes": other} if other else {}
    if any(value is not True for value in flags.values()):
        attributes["flags"] = flags
    return Record(
        id=json_path.stem,
        file=file,
        width=width,
        height=height,
        labels=[k for k, v in flags.items() if v is True],
        boxes=boxes,
        attributes=attributes,
    )


def _shape(box: Box) -> dict[str, Any]:
    """The LabelMe shape of a box: its circle, its polygon, or its rectangle."""
    kept = box.attributes.get("labelme")
    segmentation = box.segmentation
    if isinstance(kept, dict) and kept.get("shape_type") == "circle":
        shape_type, points = "circle", kept.get("points")
    elif isinstance(segmentation, list) and len(segmentation) == 1 and len(segmentation[0]) >= 6:
        polygon = segmentation[0]
        shape_type = "polygon"
        points = [[polygon[i], polygon[i + 1]] for i in range(0, len(polygon) - 1, 2)]
    else:
        shape_type, points = "rectangle", [[box.x1, box.y1], [box.x2, box.y2]]
    return {
        "label": box.name,
        "points": points,
        "group_id": box.attributes.get("group_id"),
        "description": box.attributes.get("description", ""),
        "shape_type": shape_type,
        "flags": box.attributes.get("flags", {}),
    }


def _document(record: Record) -> dict[str, Any]:
    shapes = [_shape(box) for box in record.boxes]
    kept = record.attributes.get("shapes")
    if isinstance(kept, list):
        shapes += [shape for shape in kept if isinstance(shape, dict)]
    flags = record.attributes.get("flags")
    flags = dict(flags) if isinstance(flags, dict) else {}
    flags.update(dict.fromkeys(record.labels, True))
    return {
        "version": VERSION,
        "flags": flags,
        "shapes": shapes,
        "imagePath": record.file,
        "imageData": None,
        "imageHeight": record.height,
        "imageWidth": record.width,
    }


def write(dataset: Dataset, out: Output, reporter: Reporter | None = None) -> None:
    """Write ``<id>.json`` per record, ``imagePath`` its ``file`` (the image comes along).

    Raises:
        BadRecordsError: records without an image file, or ids that cannot name a file.
    """
    reporter = reporter or NullReporter()
    records = list(dataset)
    policy = ErrorPolicy()
    for number, record in enumerate(records, start=1):
        found: list[tuple[str, str]] = []
        if record.file is None:
            found.append(("file", "LabelMe annotates images; this record has no image file"))
        problem = name_problem(record.id)
        if problem is not None:
            found.append(("id", f"{problem} (LabelMe names files after it)"))
        policy.reject(f"{out.target} (LabelMe)", None, found, number)
    policy.finish(out.target)
    encoder = msgspec.json.Encoder()
    with reporter.task("Writing LabelMe", total=len(records)) as task:
        for record in records:
            document = msgspec.json.format(encoder.encode(_document(record)), indent=2)
            out.write(f"{record.id}.json", document + b"\n")
            out.place(dataset.root, record.file or "")
            task.advance()
