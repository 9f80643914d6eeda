"""Validation that reports every problem in one pass; the strict loader is built on it.

``validate_dataset(path)`` reads ``dataset.json`` and the records line by line; a bad
line is reported and skipped, never fatal. Each problem reads
``file:line: field: what is wrong (value)``. :func:`read_records` runs the same checks
(all but the file existence) for ``open_dataset`` and the native reader, sending each
problem to an :class:`~mlbook.datasets.problems.ErrorPolicy`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from mlbook.datasets.features import features_problem, table_rows
from mlbook.datasets.metadata import (
    DATASET_FILE,
    RECORDS_ARRAY_FILE,
    RECORDS_FILE,
    DatasetInfo,
    Record,
    TableRef,
    decode_record,
    decode_records_fast,
    iter_lines,
    load_info,
    no_gc,
    records_path,
)
from mlbook.datasets.problems import ErrorPolicy, Problem, finite, path_problem, read_bytes
from mlbook.errors import DatasetError, RecordError
from mlbook.progress import NullReporter, Reporter

__all__ = [
    "Problem",
    "ValidationReport",
    "box_problems",
    "check_info",
    "check_record",
    "outside_paths",
    "parse_records",
    "plain_path",
    "read_records",
    "segmentation_problem",
    "validate_dataset",
]


#: A record's table reference and where the record is: (line, record number, reference).
_TableUse = tuple[int | None, int | None, TableRef]


@dataclass(slots=True)
class ValidationReport:
    """All problems found, and how many records were read."""

    path: str
    records: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "path": self.path,
            "ok": self.ok,
            "records": self.records,
            "problems": [p.to_dict() for p in self.problems],
        }


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def box_problems(
    x1: float, y1: float, x2: float, y2: float, width: int | None, height: int | None
) -> list[tuple[str, str]]:
    """What is wrong with a box's corners: ``(part, problem)`` pairs, ``part`` being
    ``"x1"``, ``"y1"``, ``"x2"``, ``"y2"`` or ``""`` (the whole box).

    Corners must be finite, ``x1 < x2``, ``y1 < y2``, and inside the image (from 0 to
    ``width``/``height`` when known).
    """
    if (
        0 <= x1 < x2 < _INF
        and 0 <= y1 < y2 < _INF
        and (width is None or x2 <= width)
        and (height is None or y2 <= height)
    ):
        return []
    corners = {"x1": x1, "y1": y1, "x2": x2, "y2": y2}
    bad = [(name, f"not a finite number ({v})") for name, v in corners.items() if not finite(v)]
    if bad:
        return bad
    found: list[tuple[str, str]] = []
    if x1 >= x2:
        found.append(("x1", f"x1 >= x2 ({_num(x1)} >= {_num(x2)})"))
    if y1 >= y2:
        found.append(("y1", f"y1 >= y2 ({_num(y1)} >= {_num(y2)})"))
    outside = []
    if x1 < 0 or y1 < 0:
        outside.append(f"x1={_num(x1)}, y1={_num(y1)}")
    if width is not None and max(x1, x2) > width:
        outside.append(f"x={_num(max(x1, x2))} > width {width}")
    if height is not None and max(y1, y2) > height:
        outside.append(f"y={_num(max(y1, y2))} > height {height}")
    if outside:
        found.append(("", f"outside the image ({'; '.join(outside)})"))
    return found


_INF = math.inf


def segmentation_problem(segmentation: Any, width: int | None, height: int | None) -> str | None:
    """What is wrong with a COCO segmentation (polygons or RLE), or ``None``.

    Polygons: lists of at least three ``x, y`` pairs (their numbers are finite when they
    come from JSON, which has no NaN). RLE:
    ``{"counts", "size": [height, width]}``, the size matching the image when known;
    uncompressed counts are non-negative integers adding up to ``height * width``,
    compressed counts use pycocotools' alphabet.
    """
    if type(segmentation) is list:
        for index, polygon in enumerate(segmentation):
            if type(polygon) is not list or len(polygon) < 6 or len(polygon) % 2:
                length = len(polygon) if isinstance(polygon, list) else type(polygon).__name__
                return f"polygon {index} needs an even number (>= 6) of coordinates, got {length}"
        return None
    if not isinstance(segmentation, dict):
        return f"expected polygons or RLE, got {type(segmentation).__name__}"
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if (
        not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        return f"malformed RLE: size must be [height, width], got {size!r:.40}"
    rle_height, rle_width = size
    if (height is not None and rle_height != height) or (width is not None and rle_width != width):
        return (
            f"malformed RLE: size {size} does not match the image (height {height}, width {width})"
        )
    if isinstance(counts, list):
        if not set(map(type, counts)) <= {int} or (counts and min(counts) < 0):
            return "malformed RLE: counts must be non-negative integers"
        if sum(counts) != rle_height * rle_width:
            return f"malformed RLE: counts add up to {sum(counts)}, not {rle_height * rle_width}"
        return None
    if isinstance(counts, str):
        decoded = _rle_string_counts(counts)
        if decoded is None:
            return "malformed RLE: compressed counts are not in pycocotools' encoding"
        if sum(decoded) != rle_height * rle_width:
            return f"malformed RLE: counts add up to {sum(decoded)}, not {rle_height * rle_width}"
        return None
    return f"malformed RLE: counts must be a list or a string, got {type(counts).__name__}"


def _rle_string_counts(text: str) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``),
    or ``None`` when the string is not in that encoding."""
    counts: list[int] = []
    position, end = 0, len(text)
    while position < end:
        value = shift = 0
        more = True
        while more:
            if position >= end or shift > 30:
                return None
            code = ord(text[position]) - 48
            if not 0 <= code < 64:
                return None
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        if not 0 <= value < 2**32:
            return None
        counts.append(value)
    return counts


def check_record(
    record: Record,
    classes: set[str] | None,
    root: Path | None = None,
    exists: Callable[[str], bool] = os.path.exists,
) -> list[tuple[str, str]]:
    """The ``(field, problem)`` pairs wrong with one parsed record.

    Args:
        classes: the known class names (``None``: do not check names).
        root: when given, ``file``, ``mask`` and feature tables must exist under it.
        exists: tells whether a path exists (a cached one when many records share
            files).
    """
    if _looks_clean(record, classes):
        return [] if root is None else _missing_files(record, root, exists)
    return _check_fully(record, classes, root, exists)


def _missing_files(
    record: Record, root: Path, exists: Callable[[str], bool]
) -> list[tuple[str, str]]:
    """The files of a record with no other problem that are not under ``root``."""
    found: list[tuple[str, str]] = []
    if record.file is not None and not exists(f"{root}/{record.file}"):
        found.append(("file", f"image file not found ({record.file!r})"))
    if record.mask is not None and not exists(f"{root}/{record.mask}"):
        found.append(("mask", f"mask file not found ({record.mask!r})"))
    return found


def _check_fully(
    record: Record,
    classes: set[str] | None,
    root: Path | None,
    exists: Callable[[str], bool] = os.path.exists,
) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if not record.id:
        found.append(("id", "empty"))
    for name in ("width", "height"):
        value = getattr(record, name)
        if value is not None and value <= 0:
            found.append((name, f"must be positive ({value})"))
    if classes is not None:
        for index, label in enumerate(record.labels):
            if label not in classes:
                found.append((f"labels[{index}]", f"unknown class ({label!r})"))
        for key in record.counts:
            if key not in classes:
                found.append((f"counts.{key}", f"unknown class ({key!r})"))
    for key, count in record.counts.items():
        if count < 0:
            found.append((f"counts.{key}", f"negative count ({count})"))
    width, height = record.width, record.height
    for index, box in enumerate(record.boxes):
        where = f"boxes[{index}]"
        if classes is not None and box.name not in classes:
            found.append((f"{where}.name", f"unknown class ({box.name!r})"))
        for part, problem in box_problems(box.x1, box.y1, box.x2, box.y2, width, height):
            found.append((f"{where}.{part}" if part else where, problem))
        if box.segmentation is not None:
            problem_text = segmentation_problem(box.segmentation, width, height)
            if problem_text is not None:
                found.append((f"{where}.segmentation", problem_text))
    if record.counts and record.boxes:
        boxed = Counter(box.name for box in record.boxes)
        for key in sorted(set(record.counts) | set(boxed)):
            if record.counts.get(key, 0) != boxed.get(key, 0):
                found.append(
                    (
                        f"counts.{key}",
                        f"disagrees with the boxes ({record.counts.get(key, 0)} counted, "
                        f"{boxed.get(key, 0)} boxes)",
                    )
                )
    if record.file is None and record.features is None:
        found.append(("file", "missing: give `file` (an image) or `features` (numbers)"))
    for name, value in (("file", record.file), ("mask", record.mask)):
        if value is None:
            continue
        problem_text = path_problem(value)
        if problem_text is not None:
            found.append((name, problem_text))
        elif root is not None and not exists(f"{root}/{value}"):
            kind = "image" if name == "file" else "mask"
            found.append((name, f"{kind} file not found ({value!r})"))
    features = record.features
    if features is not None:
        problem_text = features_problem(features)
        field_name = "features.table" if isinstance(features, TableRef) else "features"
        if problem_text is not None:
            found.append((field_name, problem_text))
        elif (
            root is not None
            and isinstance(features, TableRef)
            and not exists(f"{root}/{features.table}")
        ):
            found.append((field_name, f"table file not found ({features.table!r})"))
    return found


def plain_path(value: str) -> bool:
    """True for a path that is surely fine (no ``..``, not absolute, no odd characters);
    False means "look closer" with :func:`path_problem`."""
    return bool(
        value
        and value[0] != "/"
        and ".." not in value
        and "\\" not in value
        and "\x00" not in value
        and value[1:2] != ":"
        and value.strip("./")
    )


def _looks_clean(record: Record, classes: set[str] | None) -> bool:
    """A fast test that ``record`` has no problem (no file checks). True only when
    :func:`check_record` would find nothing; False means "run the full check"."""
    width, height = record.width, record.height
    file = record.file
    if (
        not record.id
        or file is None
        or record.features is not None
        or (width is not None and width <= 0)
        or (height is not None and height <= 0)
        or not plain_path(file)
        or (record.mask is not None and not plain_path(record.mask))
    ):
        return False
    counts = record.counts
    if counts and min(counts.values()) < 0:
        return False
    if classes is not None and not (
        classes.issuperset(record.labels) and classes.issuperset(counts)
    ):
        return False
    inf = _INF
    wide = inf if width is None else width
    high = inf if height is None else height
    for box in record.boxes:
        x1, y1, x2, y2 = box.x1, box.y1, box.x2, box.y2
        if not (0 <= x1 < x2 <= wide and x2 < inf and 0 <= y1 < y2 <= high and y2 < inf):
            return False
        segmentation = box.segmentation
        if segmentation is not None:
            if type(segmentation) is not list:
                if segmentation_problem(segmentation, width, height) is not None:
                    return False
            else:
                for polygon in segmentation:
                    if len(polygon) < 6 or len(polygon) % 2:
                        return False
        if classes is not None and box.name not in classes:
            return False
    if counts and record.boxes:
        boxed: dict[str, int] = {}
        for box in record.boxes:
            boxed[box.name] = boxed.get(box.name, 0) + 1
        if boxed != {k: v for k, v in counts.items() if v}:
            return False
    return True


def check_info(info: DatasetInfo) -> list[tuple[str, str]]:
    """The ``(field, problem)`` pairs wrong with ``dataset.json``: duplicate class names
    or ids."""
    found: list[tuple[str, str]] = []
    names = Counter(c.name for c in info.classes)
    ids = Counter(c.id for c in info.classes)
    for index, info_class in enumerate(info.classes):
        if names[info_class.name] > 1:
            found.append((f"classes[{index}].name", f"duplicate ({info_class.name!r})"))
        if ids[info_class.id] > 1:
            found.append((f"classes[{index}].id", f"duplicate ({info_class.id})"))
    return found


def validate_dataset(
    path: Path | str, check_files: bool = True, reporter: Reporter | None = None
) -> ValidationReport:
    """Check a dataset directory (or a records file) and report every problem.

    Args:
        path: the dataset directory, or a ``records.jsonl``/``records.json`` file.
        check_files: also check that image and mask files exist.

    Raises:
        DatasetError: ``path`` holds no records file at all, or it cannot be read.
    """
    reporter = reporter or NullReporter()
    target = Path(path)
    if target.is_file():
        root, records_file = target.parent, target
    else:
        root, records_file = target, records_path(target)
    sink = ErrorPolicy("skip")
    classes: set[str] | None = None
    info_path = root / DATASET_FILE
    try:
        info = load_info(root)
    except RecordError as exc:
        sink.fail_error(exc)
        info = None
    if info is not None:
        for field_name, problem in check_info(info):
            sink.fail(info_path, None, field_name, problem)
        classes = {c.name for c in info.classes} if info.classes else None
    if not records_file.exists() and not records_file.is_symlink():
        raise DatasetError(
            f"{records_file}: no records file; expected {RECORDS_FILE} or {RECORDS_ARRAY_FILE}"
        )
    data = read_bytes(records_file, "records file")
    tables: list[_TableUse] = []
    with no_gc():
        _, parsed = _scan(
            data, records_file, sink, classes, root if check_files else None, reporter, tables
        )
    if check_files:
        _check_table_rows(root, records_file, tables, sink)
    return ValidationReport(path=str(target), records=parsed, problems=sink.problems)


def _check_table_rows(
    root: Path, records_file: Path, tables: list[_TableUse], sink: ErrorPolicy
) -> None:
    """Each table referenced is readable and has the rows the records name."""
    rows: dict[str, int | None] = {}
    for line, record_no, ref in tables:
        if ref.table not in rows:
            try:
                rows[ref.table] = table_rows(root / ref.table)
            except DatasetError as exc:
                rows[ref.table] = None
                sink.add(records_file, line, "features.table", str(exc), record_no)
        count = rows[ref.table]
        if count is not None and ref.row >= count:
            message = f"past the end of {ref.table} ({ref.row} >= {count} rows)"
            sink.add(records_file, line, "features.row", message, record_no)


class _Paths(msgspec.Struct, gc=False):
    """The paths of one record (anything else in it is ignored)."""

    file: Any = None
    mask: Any = None
    features: Any = None


_PATHS_DECODER = msgspec.json.Decoder(_Paths)


def outside_paths(records_file: Path) -> list[tuple[int, str, str, str]]:
    """``(line or record number, field, path, problem)`` for every record path of a
    records file that is not a path inside its dataset directory (``file``, ``mask``,
    ``features.table``). Lines that are not JSON records are skipped: reporting them is
    :func:`validate_dataset`'s job.

    Raises:
        DatasetError: the file cannot be read.
    """
    data = read_bytes(records_file, "records file")
    found: list[tuple[int, str, str, str]] = []
    if data.lstrip()[:1] == b"[":
        try:
            items = list(enumerate(msgspec.json.decode(data, type=list[_Paths]), start=1))
        except (msgspec.DecodeError, RecursionError):
            return found
    else:
        items = []
        for number, raw in iter_lines(data):
            with contextlib.suppress(msgspec.DecodeError, RecursionError):
                items.append((number, _PATHS_DECODER.decode(raw)))
    for position, paths in items:
        table = paths.features.get("table") if isinstance(paths.features, dict) else None
        for name, value in (("file", paths.file), ("mask", paths.mask), ("features.table", table)):
            if isinstance(value, str) and not plain_path(value):
                problem = path_problem(value)
                if problem is not None:
                    found.append((position, name, value, problem))
    return found


def read_records(
    path: Path,
    policy: ErrorPolicy | None = None,
    classes: set[str] | None = None,
    reporter: Reporter | None = None,
) -> list[Record]:
    """The records of the records file ``path`` (see :func:`parse_records`).

    Raises:
        DatasetError: the file cannot be read; BadRecordsError: the problems.
    """
    return parse_records(read_bytes(path, "records file"), path, policy, classes, reporter)


def parse_records(
    data: bytes,
    path: Path | str = "<records>",
    policy: ErrorPolicy | None = None,
    classes: set[str] | None = None,
    reporter: Reporter | None = None,
) -> list[Record]:
    """The records in ``data`` (JSON Lines, or a JSON array when it starts with ``[``)
    that have no problem; loose input forms are accepted.

    Every problem :func:`validate_dataset` finds, except missing files, goes to
    ``policy`` (default: fail), then ``policy.finish`` decides. The canonical form takes
    a fast typed path; anything else, or data with problems, is read record by record
    so that each problem has its line.

    Args:
        classes: the known class names (``None``: any name).

    Raises:
        BadRecordsError: the problems, when the policy fails.
    """
    policy = policy or ErrorPolicy()
    with no_gc():
        fast = decode_records_fast(data)
        if fast is not None and _all_good(fast, classes):
            records = fast
        else:
            name = Path(path)
            records, _ = _scan(data, name, policy, classes, None, reporter or NullReporter())
    policy.finish(path)
    return records


def _all_good(records: list[Record], classes: set[str] | None) -> bool:
    seen: set[str] = set()
    width: int | None = None
    for record in records:
        if record.id in seen or check_record(record, classes):
            return False
        seen.add(record.id)
        if type(record.features) is list:
            if width is None:
                width = len(record.features)
            elif len(record.features) != width:
                return False
    return True


def _items(data: bytes, records_file: Path, policy: ErrorPolicy) -> list[tuple[int, Any]]:
    """(position, raw item) pairs; positions are lines (JSONL) or record numbers (array)."""
    if data.lstrip()[:1] != b"[":
        return list(iter_lines(data))
    try:
        items = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        try:
            decode_record(data, records_file, 1)
        except RecordError as error:
            policy.fail(records_file, None, "", error.problem)
        return []
    if not isinstance(items, list):  # pragma: no cover - the data starts with "["
        return []
    return list(enumerate(items, start=1))


#: Fields whose problem ends the record's check (what is left could not be checked).
_REQUIRED = ("id", "file", "features")


def _decode_all(
    raw: Any,
    records_file: Path,
    position: int,
    line: int | None,
    record_no: int | None,
    policy: ErrorPolicy,
) -> tuple[Record | None, bool]:
    """Decode one record, reporting each structural problem: a wrong optional field is
    reported, dropped, and decoding goes on so the rest of the record is still checked.
    Returns the record (``None`` when nothing could be decoded) and whether it had a
    problem."""
    if isinstance(raw, bytes):
        with contextlib.suppress(msgspec.DecodeError, RecursionError):  # decode_record says
            raw = msgspec.json.decode(raw)
    rejected = False
    for _ in range(32):
        try:
            record = decode_record(raw, records_file, position)
        except RecordError as exc:
            if rejected:
                policy.add(records_file, line, exc.field, exc.problem, record_no)
            else:
                policy.reject(records_file, line, [(exc.field, exc.problem)], record_no)
                rejected = True
            key = exc.field.split(".")[0].split("[")[0]
            if not isinstance(raw, dict) or key not in raw or key in _REQUIRED:
                return None, True
            raw = {k: v for k, v in raw.items() if k != key}
        else:
            return record, rejected
    return None, True


def _decode_fast(data: bytes, is_array: bool) -> list[tuple[int, Any]] | None:
    """``(position, record)`` pairs when every record is in the canonical form (one typed
    decoding pass), else ``None`` (then each record is decoded on its own)."""
    records = decode_records_fast(data)
    if records is None:
        return None
    if is_array:
        return list(enumerate(records, start=1))
    lines = [number for number, _ in iter_lines(data)]
    return list(zip(lines, records, strict=True)) if len(lines) == len(records) else None


def _scan(
    data: bytes,
    records_file: Path,
    policy: ErrorPolicy,
    classes: set[str] | None,
    root: Path | None,
    reporter: Reporter,
    tables: list[_TableUse] | None = None,
) -> tuple[list[Record], int]:
    """The good records and how many records were parsed; every problem to ``policy``.

    Args:
        tables: when given, collects the table references of the good records (their
            rows are checked once the tables are known).
    """
    is_array = data.lstrip()[:1] == b"["
    decoded = _decode_fast(data, is_array)
    items = _items(data, records_file, policy) if decoded is None else decoded
    seen: dict[str, int] = {}
    width: tuple[int, int] | None = None  # (features length, position of the first)
    good: list[Record] = []
    parsed = 0
    exists = functools.lru_cache(maxsize=65536)(os.path.exists)
    with reporter.task("Validating", total=len(items)) as task:
        for position, raw in items:
            task.advance()
            line, record_no = (None, position) if is_array else (position, None)
            if decoded is not None:
                record, rejected = raw, False
            else:
                record, rejected = _decode_all(raw, records_file, position, line, record_no, policy)
            if record is None:
                continue
            parsed += 1
            found: list[tuple[str, str]] = []
            first = seen.setdefault(record.id, position)
            if first != position:
                where = f"record {first}" if is_array else f"line {first}"
                found.append(("id", f"duplicate id ({record.id!r}, first at {where})"))
            found += check_record(record, classes, root, exists)
            features = record.features
            if type(features) is list and features:
                if width is None:
                    width = (len(features), position)
                elif len(features) != width[0]:
                    where = f"record {width[1]}" if is_array else f"line {width[1]}"
                    found.append(
                        (
                            "features",
                            f"{len(features)} numbers, but the first record with features "
                            f"({where}) has {width[0]}; give every record as many",
                        )
                    )
            if rejected:
                for field_name, problem in found:
                    policy.add(records_file, line, field_name, problem, record_no)
            elif not found or not policy.reject(records_file, line, found, record_no):
                good.append(record)
                if tables is not None and isinstance(features, TableRef):
                    tables.append((line, record_no, features))
    return good, parsed
