"""What both YOLO layouts share: label lines read and written, and Ultralytics'
``data.yaml`` (read with PyYAML's ``safe_load``, never ``yaml.load``).

A label line is ``class cx cy w h`` (a box), ``class x1 y1 x2 y2 x3 y3 ...`` (a segment:
a polygon of at least three points; an oriented box is a four-point polygon), or, when
``data.yaml`` has ``kpt_shape: [K, D]``, ``class cx cy w h`` followed by ``K * D``
keypoint values (pose). Values are normalised to the image size.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlbook.datasets.metadata import Box, Record
from mlbook.datasets.problems import decode_text, path_problem, read_bytes, short
from mlbook.datasets.validate import box_problems
from mlbook.errors import RecordError

__all__ = [
    "DataYaml",
    "label_lines",
    "label_path",
    "parse_labels",
    "read_data_yaml",
    "text_of",
    "yaml_text",
]

#: The split keys of ``data.yaml`` (``validation`` is read as ``val``, as Ultralytics does).
SPLIT_KEYS = ("train", "val", "test")


def text_of(path: Path, what: str) -> str:
    """A UTF-8 text file. Raises DatasetError (unreadable) or RecordError (not UTF-8)."""
    return decode_text(read_bytes(path, what), path)


def label_path(image: str) -> str:
    """The label file of an image, as Ultralytics finds it: the last ``images/`` folder
    of the path becomes ``labels/``, the suffix ``.txt`` (beside the image when the path
    has no ``images/`` folder)."""
    head, sep, tail = f"/{image}".rpartition("/images/")
    joined = f"{head}/labels/{tail}" if sep else f"/{image}"
    stem, dot, suffix = joined.rpartition(".")
    return (f"{stem}.txt" if dot and "/" not in suffix else f"{joined}.txt").lstrip("/")


def _snap(value: float, limit: int) -> float:
    """Undo the rounding of 6-decimal normalised values at the image edges."""
    if -0.01 < value < 0:
        return 0.0
    if limit < value < limit + 0.01:
        return float(limit)
    return value


#: A problem of one label file: line, what.
LineProblem = tuple[int | None, str]


def parse_labels(
    text: str,
    names: dict[int, str],
    width: int,
    height: int,
    problems: list[LineProblem],
    keypoints: tuple[int, int] | None = None,
) -> list[Box]:
    """The boxes of a label file's ``text``; each bad line to ``problems``.

    Args:
        names: class index -> name.
        keypoints: ``(K, D)`` from ``kpt_shape`` for pose labels.
    """
    boxes: list[Box] = []
    pose_length = 5 + keypoints[0] * keypoints[1] if keypoints else None
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        count = len(parts)
        if not (count == 5 or count == pose_length or (count >= 7 and count % 2)):
            expected = (
                f"`class cx cy w h` and {pose_length - 5} keypoint values"
                if pose_length
                else "`class cx cy w h` or a polygon `class x1 y1 x2 y2 x3 y3 ...`"
            )
            problems.append((number, f"expected {expected}, got {short(line)}"))
            continue
        try:
            index = int(parts[0])
            values = [float(p) for p in parts[1:]]
        except ValueError:
            problems.append((number, f"not numbers: {short(line)}"))
            continue
        if not all(math.isfinite(v) for v in values):
            problems.append((number, f"not finite numbers: {short(line)}"))
            continue
        if index not in names:
            top = f"0..{len(names) - 1}" if names else "there are none"
            problems.append((number, f"class {index} is not in the class names ({top})"))
            continue
        box = _box(names[index], values, width, height, count == pose_length)
        found = box_problems(box.x1, box.y1, box.x2, box.y2, width, height)
        if found:
            problems.extend((number, problem) for _, problem in found)
            continue
        boxes.append(box)
    return boxes


def _box(name: str, values: list[float], width: int, height: int, pose: bool) -> Box:
    if len(values) == 4 or pose:
        cx, cy, w, h = values[:4]
        x1, y1 = _snap((cx - w / 2) * width, width), _snap((cy - h / 2) * height, height)
        x2, y2 = _snap((cx + w / 2) * width, width), _snap((cy + h / 2) * height, height)
        attributes: dict[str, Any] = {}
        if pose:
            attributes["keypoints"] = values[4:]
        return Box(name=name, x1=x1, y1=y1, x2=x2, y2=y2, attributes=attributes)
    xs = [_snap(x * width, width) for x in values[0::2]]
    ys = [_snap(y * height, height) for y in values[1::2]]
    polygon = [c for point in zip(xs, ys, strict=True) for c in point]
    return Box(name=name, x1=min(xs), y1=min(ys), x2=max(xs), y2=max(ys), segmentation=[polygon])


def _number(value: float) -> str:
    return f"{value:.6f}"


def label_lines(record: Record, index_of: dict[str, int]) -> str:
    """The label file of ``record`` (which has ``width`` and ``height``): a segment line
    for a box with one polygon, a pose line for a box with ``keypoints``, else a box line."""
    width, height = record.width or 1, record.height or 1
    lines = []
    for box in record.boxes:
        index = index_of[box.name]
        segmentation = box.segmentation
        if (
            isinstance(segmentation, list)
            and len(segmentation) == 1
            and len(segmentation[0]) >= 6
            and "keypoints" not in box.attributes
        ):
            polygon = segmentation[0]
            coordinates = [
                _number(value / (width if position % 2 == 0 else height))
                for position, value in enumerate(polygon)
            ]
            lines.append(f"{index} {' '.join(coordinates)}\n")
            continue
        cx, cy = (box.x1 + box.x2) / 2 / width, (box.y1 + box.y2) / 2 / height
        w, h = (box.x2 - box.x1) / width, (box.y2 - box.y1) / height
        values = [_number(v) for v in (cx, cy, w, h)]
        keypoints = box.attributes.get("keypoints")
        if isinstance(keypoints, list):
            values += [_keypoint(v) for v in keypoints]
        lines.append(f"{index} {' '.join(values)}\n")
    return "".join(lines)


def _keypoint(value: Any) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else _number(number)


@dataclass
class DataYaml:
    """What mlbook reads from an Ultralytics ``data.yaml``.

    Attributes:
        path: the file.
        base: the folder the split paths are relative to (``path:``, else the file's).
        names: class index -> name.
        splits: split -> the entries listed (folders, list files, images), relative to
            ``base``, as written.
        keypoints: ``kpt_shape`` as ``(K, D)`` for pose datasets.
        extra: ``kpt_shape`` and ``flip_idx``, kept for writing back.
    """

    path: Path
    base: str
    names: dict[int, str]
    splits: dict[str, list[str]] = field(default_factory=dict)
    keypoints: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _yaml_problem(path: Path, message: str, line: int | None = None) -> RecordError:
    return RecordError(path, line, "", message)


#: Deeper ``[``/``{`` nesting than this is refused before parsing (a data.yaml has 2).
_MAX_DEPTH = 64
_BRACKETS = re.compile(r"[\[\]{}]")


def _flow_depth(text: str) -> int:
    """The deepest ``[``/``{`` nesting of ``text`` (PyYAML would spend seconds on it)."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(text):
        depth += 1 if match.group() in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > _MAX_DEPTH:
            break
    return deepest


def read_data_yaml(path: Path) -> DataYaml:
    """Parse an Ultralytics ``data.yaml`` (``safe_load``: no Python objects, no tags).

    Raises:
        DatasetError: unreadable; RecordError: not YAML, not a mapping, bad ``names``,
        ``nc`` that disagrees, bad split entries or ``kpt_shape``.
    """
    import yaml

    text = text_of(path, "YOLO data.yaml")
    if _flow_depth(text) > _MAX_DEPTH:
        raise _yaml_problem(path, "YAML nested too deeply to read")
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise _yaml_problem(path, f"not valid YAML: {exc.problem}", line) from None
    except yaml.YAMLError as exc:
        raise _yaml_problem(path, f"not valid YAML: {short(str(exc))}") from None
    except RecursionError:
        raise _yaml_problem(path, "YAML nested too deeply to read") from None
    if not isinstance(data, dict):
        raise _yaml_problem(path, f"expected a mapping with `names`, got {type(data).__name__}")
    names = _names(path, data)
    base = _base(path, data.get("path"))
    splits: dict[str, list[str]] = {}
    for key in (*SPLIT_KEYS, "validation"):
        value = data.get(key)
        if value is None or value == "":
            continue
        entries = value if isinstance(value, list) else [value]
        if not all(isinstance(e, str) and e for e in entries):
            raise _yaml_problem(path, f"`{key}` must be a path or a list of paths")
        splits.setdefault("val" if key == "validation" else key, []).extend(entries)
    parsed = DataYaml(path=path, base=base, names=names, splits=splits)
    shape = data.get("kpt_shape")
    if shape is not None:
        if (
            not isinstance(shape, list)
            or len(shape) != 2
            or not all(type(v) is int and v > 0 for v in shape)
            or shape[1] not in (2, 3)
        ):
            raise _yaml_problem(path, "`kpt_shape` must be [keypoints, 2 or 3]")
        parsed.keypoints = (shape[0], shape[1])
        parsed.extra["kpt_shape"] = shape
        flip = data.get("flip_idx")
        if isinstance(flip, list) and all(type(v) is int for v in flip):
            parsed.extra["flip_idx"] = flip
    return parsed


def _names(path: Path, data: dict[Any, Any]) -> dict[int, str]:
    raw = data.get("names")
    count = data.get("nc")
    if count is not None and (type(count) is not int or count < 0):
        raise _yaml_problem(path, "`nc` must be a whole number")
    if raw is None:
        if count is None:
            raise _yaml_problem(path, "no `names` (nor `nc`); list the class names")
        return {index: f"class_{index}" for index in range(count)}
    if isinstance(raw, list):
        pairs = list(enumerate(raw))
    elif isinstance(raw, dict):
        pairs = list(raw.items())
    else:
        raise _yaml_problem(path, "`names` must be a list of names or a mapping id: name")
    names: dict[int, str] = {}
    for key, value in pairs:
        if type(key) is not int or key < 0:
            raise _yaml_problem(path, f"`names` key {short(key)} is not a class index (0, 1, ...)")
        if isinstance(value, bool | int | float | str) and str(value):
            names[key] = str(value)  # as Ultralytics reads them: `no` is the name 'False'
        else:
            raise _yaml_problem(path, f"`names[{key}]` is not a name")
    if len(set(names.values())) != len(names):
        raise _yaml_problem(path, "`names` lists a name twice; give each class its own name")
    if count is not None and count != len(names):
        raise _yaml_problem(path, f"`nc: {count}` but `names` has {len(names)} names")
    return names


def _base(path: Path, value: Any) -> str:
    """The dataset folder ``path:`` names, relative to the YAML's folder: ``""`` for the
    folder itself, or when ``path:`` is absolute, leaves it or does not exist there (it
    usually names the machine the file was written on)."""
    if not isinstance(value, str) or not value.strip():
        return ""
    relative = value.strip().rstrip("/")
    if relative in (".", "./"):
        return ""
    if path_problem(relative) is None and (path.parent / relative).is_dir():
        return relative.removeprefix("./")
    return ""


def yaml_text(document: dict[str, Any]) -> bytes:
    """A ``data.yaml`` (``safe_dump``: keys in the given order)."""
    import yaml

    text: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return text.encode("utf-8")
