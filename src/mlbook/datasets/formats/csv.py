"""CSV, one row per box, both ways.

Columns: ``id,file,width,height,split,name,x1,y1,x2,y2``; an image without boxes is one
row with an empty ``name``. On input, common aliases are accepted (``filename``/``image``
for ``file``, ``label``/``class`` for ``name``, ``xmin``/``ymin``/``xmax``/``ymax``); the
``id`` column is optional (the file path is used).
"""

from __future__ import annotations

import csv as _csv
import io
import math
from pathlib import Path

from mlbook.datasets.dataset import Dataset
from mlbook.datasets.formats._common import Output
from mlbook.datasets.metadata import Box, Record
from mlbook.datasets.problems import (
    ErrorPolicy,
    decode_text,
    path_problem,
    read_bytes,
    short,
)
from mlbook.datasets.validate import box_problems
from mlbook.errors import DatasetError, RecordError
from mlbook.progress import NullReporter, Reporter

__all__ = ["COLUMNS", "FILE_SUFFIX", "NAME", "detect", "read", "write"]

NAME = "csv"
#: A target ending in this is the CSV file; anything else is a folder (``boxes.csv``).
FILE_SUFFIX = ".csv"
COLUMNS = ("id", "file", "width", "height", "split", "name", "x1", "y1", "x2", "y2")
_ALIASES = {
    "filename": "file",
    "image": "file",
    "path": "file",
    "label": "name",
    "class": "name",
    "xmin": "x1",
    "ymin": "y1",
    "xmax": "x2",
    "ymax": "y2",
}


def detect(path: Path) -> bool:
    """True for a ``.csv`` file."""
    return path.is_file() and path.suffix.lower() == ".csv"


class _Row:
    """One CSV row by column name, and the problems found in it."""

    def __init__(self, header: list[str], cells: list[str]) -> None:
        self.cells = dict(zip(header, cells, strict=False))
        self.found: list[tuple[str, str]] = []

    def text(self, column: str) -> str:
        return (self.cells.get(column) or "").strip()

    def number(self, column: str) -> float | None:
        value = self.text(column)
        if not value:
            return None
        try:
            number = float(value)
        except ValueError:
            self.found.append((column, f"not a number ({short(value)})"))
            return None
        if not math.isfinite(number):
            self.found.append((column, f"not a finite number ({short(value)})"))
            return None
        return number

    def size(self, column: str) -> int | None:
        value = self.number(column)
        if value is None:
            return None
        if not value.is_integer() or value <= 0:
            self.found.append((column, f"must be a positive whole number ({_cell(value)})"))
            return None
        return int(value)


def read(
    path: Path, reporter: Reporter | None = None, policy: ErrorPolicy | None = None
) -> Dataset:
    """Read a CSV file (one row per box); rows of one image are grouped by ``id``/``file``.

    A row that is bad leaves its whole image out (under ``on_error="skip"``); a file
    that is not UTF-8 text or not CSV at all fails.
    """
    reporter = reporter or NullReporter()
    policy = policy or ErrorPolicy()
    records: dict[str, Record] = {}
    try:
        text = decode_text(read_bytes(path, "CSV file"), path)
        _read_rows(path, text, records, policy, reporter)
    except RecordError as exc:
        policy.fail_error(exc)
    policy.finish(path)
    good = [r for key, r in records.items() if not policy.rejected(("csv", key))]
    if not good and not policy.skipped:
        raise DatasetError(f"{path}: no rows")
    return Dataset.from_records(good, name=path.stem, root=path.parent, source="CSV")


def _read_rows(
    path: Path, text: str, records: dict[str, Record], policy: ErrorPolicy, reporter: Reporter
) -> None:
    reader = _csv.reader(io.StringIO(text, newline=""))
    try:
        header = [_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in next(reader, [])]
        if "file" not in header:
            columns = ", ".join(header) or "none"
            raise RecordError(path, 1, "file", f"no file column in the header ({short(columns)})")
        with reporter.task("Reading CSV") as task:
            for cells in reader:
                task.advance()
                if cells:
                    _read_row(path, reader.line_num, header, cells, records, policy)
    except _csv.Error as exc:
        problem = str(exc)
        if "field limit" in problem:
            limit = _csv.field_size_limit()
            problem = f"a value longer than {limit} characters; is this really a CSV file?"
        raise RecordError(path, reader.line_num, "", f"not readable as CSV: {problem}") from None


def _read_row(
    path: Path,
    line: int,
    header: list[str],
    cells: list[str],
    records: dict[str, Record],
    policy: ErrorPolicy,
) -> None:
    row = _Row(header, cells)
    file = row.cells.get("file") or ""
    key = row.text("id") or file
    if len(cells) != len(header):
        message = f"{len(cells)} values for {len(header)} columns; quote values that hold commas"
        row.found.append(("", message))
    record = records.get(key)
    if record is None:
        width, height = row.size("width"), row.size("height")
        problem = path_problem(file)
        if problem is not None:
            row.found.append(("file", problem))
        record = Record(
            id=key,
            file=file,
            width=width,
            height=height,
            split=row.text("split") or None,
            boxes=[],
        )
        records[key] = record
    name = row.text("name")
    if name:
        corners = [row.number(column) for column in ("x1", "y1", "x2", "y2")]
        if any(c is None for c in corners) and len(row.found) == 0:
            row.found.append(("x1..y2", f"box {name!r} needs all four corners"))
        if not row.found:
            x1, y1, x2, y2 = (float(c or 0) for c in corners)
            found = box_problems(x1, y1, x2, y2, record.width, record.height)
            row.found += [(f"{part or 'x1..y2'}", problem) for part, problem in found]
            if not found:
                record.boxes.append(Box(name=name, x1=x1, y1=y1, x2=x2, y2=y2))
    policy.reject(path, line, row.found, key=("csv", key))


def _cell(value: float | int | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def write(dataset: Dataset, out: Output, reporter: Reporter | None = None) -> None:
    """Write one row per box (and one row for each image without boxes) into the target
    file (a folder gets ``boxes.csv``); ``file`` keeps each record's relative path and the
    images come along beside the CSV."""
    reporter = reporter or NullReporter()
    records = list(dataset)
    buffer = io.StringIO()
    writer = _csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    with reporter.task("Writing CSV", total=len(records)) as task:
        for record in records:
            head = [record.id, record.file, _cell(record.width), _cell(record.height)]
            head.append(record.split or "")
            if not record.boxes:
                writer.writerow([*head, "", "", "", "", ""])
            for box in record.boxes:
                corners = [_cell(box.x1), _cell(box.y1), _cell(box.x2), _cell(box.y2)]
                writer.writerow([*head, box.name, *corners])
            out.place(dataset.root, record.file)
            task.advance()
    out.write(out.file or "boxes.csv", buffer.getvalue().encode("utf-8"))
