"""Validation that reports every problem in one pass.

``validate_dataset(path)`` reads ``dataset.json`` and the records line by line; a bad
line is reported and skipped, never fatal. Each problem reads
``file:line: field: what is wrong (value)``.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from mlbook.datasets.metadata import (
    DATASET_FILE,
    RECORDS_ARRAY_FILE,
    RECORDS_FILE,
    DatasetInfo,
    Record,
    decode_record,
    iter_lines,
    load_info,
    no_gc,
    records_path,
)
from mlbook.errors import DatasetError, RecordError
from mlbook.progress import NullReporter, Reporter

__all__ = ["Problem", "ValidationReport", "check_record", "validate_dataset"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong: where (file, line or record number, field) and what."""

    path: str
    line: int | None
    field: str
    message: str
    record: int | None = None

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
        elif self.record is not None:
            where += f": record {self.record}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The problem as JSON-ready data."""
        return {
            "path": self.path,
            "line": self.line,
            "record": self.record,
            "field": self.field,
            "message": self.message,
            "text": str(self),
        }


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


def check_record(
    record: Record,
    classes: set[str] | None,
    root: Path | None = None,
) -> list[tuple[str, str]]:
    """The ``(field, problem)`` pairs wrong with one parsed record.

    Args:
        classes: the known class names (``None``: do not check names).
        root: when given, ``file`` and ``mask`` must exist under it.
    """
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
        if box.x1 >= box.x2:
            found.append((f"{where}.x1", f"x1 >= x2 ({_num(box.x1)} >= {_num(box.x2)})"))
        if box.y1 >= box.y2:
            found.append((f"{where}.y1", f"y1 >= y2 ({_num(box.y1)} >= {_num(box.y2)})"))
        outside = []
        if box.x1 < 0 or box.y1 < 0:
            outside.append(f"x1={_num(box.x1)}, y1={_num(box.y1)}")
        if width is not None and max(box.x1, box.x2) > width:
            outside.append(f"x={_num(max(box.x1, box.x2))} > width {width}")
        if height is not None and max(box.y1, box.y2) > height:
            outside.append(f"y={_num(max(box.y1, box.y2))} > height {height}")
        if outside:
            found.append((where, f"outside the image ({'; '.join(outside)})"))
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
    if root is not None:
        if not os.path.exists(root / record.file):
            found.append(("file", f"image file not found ({record.file!r})"))
        if record.mask is not None and not os.path.exists(root / record.mask):
            found.append(("mask", f"mask file not found ({record.mask!r})"))
    return found


def _check_info(info: DatasetInfo, path: str, report: ValidationReport) -> None:
    names = Counter(c.name for c in info.classes)
    ids = Counter(c.id for c in info.classes)
    for index, info_class in enumerate(info.classes):
        if names[info_class.name] > 1:
            report.problems.append(
                Problem(path, None, f"classes[{index}].name", f"duplicate ({info_class.name!r})")
            )
        if ids[info_class.id] > 1:
            report.problems.append(
                Problem(path, None, f"classes[{index}].id", f"duplicate ({info_class.id})")
            )


def validate_dataset(
    path: Path | str, check_files: bool = True, reporter: Reporter | None = None
) -> ValidationReport:
    """Check a dataset directory (or a records file) and report every problem.

    Args:
        path: the dataset directory, or a ``records.jsonl``/``records.json`` file.
        check_files: also check that image and mask files exist.

    Raises:
        DatasetError: ``path`` holds no records file at all.
    """
    reporter = reporter or NullReporter()
    target = Path(path)
    if target.is_file():
        root, records_file = target.parent, target
    else:
        root, records_file = target, records_path(target)
    report = ValidationReport(path=str(target))
    classes: set[str] | None = None
    info_path = root / DATASET_FILE
    try:
        info = load_info(root)
    except RecordError as exc:
        report.problems.append(Problem(str(info_path), exc.line, exc.field, exc.problem))
        info = None
    if info is not None:
        _check_info(info, str(info_path), report)
        classes = {c.name for c in info.classes} if info.classes else None
    try:
        data = records_file.read_bytes()
    except FileNotFoundError:
        raise DatasetError(
            f"{records_file}: no records file; expected {RECORDS_FILE} or {RECORDS_ARRAY_FILE}"
        ) from None
    with no_gc():
        _check_records(data, records_file, root, classes, check_files, report, reporter)
    return report


def _items(data: bytes, records_file: Path, report: ValidationReport) -> list[tuple[int, Any]]:
    """(position, raw item) pairs; positions are lines (JSONL) or record numbers (array)."""
    if data.lstrip()[:1] == b"[":
        try:
            items = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            try:
                decode_record(data, records_file, 1)
            except RecordError as error:
                report.problems.append(Problem(str(records_file), None, "", error.problem))
            else:  # pragma: no cover - decode_record fails whenever decode does
                report.problems.append(Problem(str(records_file), None, "", str(exc)))
            return []
        if not isinstance(items, list):
            return []
        return list(enumerate(items, start=1))
    return list(iter_lines(data))


_REQUIRED = ("id", "file")


def _decode_all(
    raw: Any,
    records_file: Path,
    position: int,
    line: int | None,
    record_no: int | None,
    report: ValidationReport,
) -> Record | None:
    """Decode one record, reporting each structural problem: a wrong optional field is
    reported, dropped, and decoding goes on so the rest of the record is still checked."""
    name = str(records_file)
    if isinstance(raw, bytes):
        with contextlib.suppress(msgspec.DecodeError):  # decode_record reports it
            raw = msgspec.json.decode(raw)
    for _ in range(32):
        try:
            return decode_record(raw, records_file, position)
        except RecordError as exc:
            report.problems.append(Problem(name, line, exc.field, exc.problem, record_no))
            key = exc.field.split(".")[0].split("[")[0]
            if not isinstance(raw, dict) or key not in raw or key in _REQUIRED:
                return None
            raw = {k: v for k, v in raw.items() if k != key}
    return None


def _check_records(
    data: bytes,
    records_file: Path,
    root: Path,
    classes: set[str] | None,
    check_files: bool,
    report: ValidationReport,
    reporter: Reporter,
) -> None:
    is_array = data.lstrip()[:1] == b"["
    items = _items(data, records_file, report)
    seen: dict[str, int] = {}
    name = str(records_file)
    with reporter.task("Validating", total=len(items)) as task:
        for position, raw in items:
            line, record_no = (None, position) if is_array else (position, None)
            record = _decode_all(raw, records_file, position, line, record_no, report)
            if record is None:
                task.advance()
                continue
            report.records += 1
            first = seen.setdefault(record.id, position)
            if first != position:
                where = f"record {first}" if is_array else f"line {first}"
                report.problems.append(
                    Problem(
                        name,
                        line,
                        "id",
                        f"duplicate id ({record.id!r}, first at {where})",
                        record_no,
                    )
                )
            for field_name, problem in check_record(record, classes, root if check_files else None):
                report.problems.append(Problem(name, line, field_name, problem, record_no))
            task.advance()
