"""CSV, both ways: one row per box, or a table of numbers (one row per sample).

Boxes: columns ``id,file,width,height,split,name,x1,y1,x2,y2``; an image without boxes
is one row with an empty ``name``. On input, common aliases are accepted
(``filename``/``image`` for ``file``, ``label``/``class`` for ``name``,
``xmin``/``ymin``/``xmax``/``ymax``); the ``id`` column is optional (the file path is
used).

Tables (``read(..., label="species")``, ``mlbook data convert --label``): each row is a
record whose ``features`` are the row's numbers and whose label is the ``label``
column; ``id``, ``split`` and ``file`` columns are used when present (the id is
otherwise the row number, from 0). The feature column names are kept in the dataset
attributes (``feature_names``, ``label_column``). A dataset of such records is written
back as such a table.
"""

from __future__ import annotations

import csv as _csv
import io
import math
from pathlib import Path

from mlbook.datasets.dataset import Dataset
from mlbook.datasets.formats._common import Output
from mlbook.datasets.metadata import Box, DatasetInfo, Record
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
    path: Path,
    reporter: Reporter | None = None,
    policy: ErrorPolicy | None = None,
    label: str | None = None,
) -> Dataset:
    """Read a CSV file: one row per box (rows of one image are grouped by
    ``id``/``file``), or with ``label`` a table of numbers, one record per row.

    A row that is bad leaves its whole image out (under ``on_error="skip"``); a file
    that is not UTF-8 text or not CSV at all fails.
    """
    reporter = reporter or NullReporter()
    policy = policy or ErrorPolicy()
    if label is not None:
        return _read_table(path, label, reporter, policy)
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
            raise RecordError(
                path,
                1,
                "file",
                f"no file column in the header ({short(columns)}); for a table of numbers, "
                "name its label column with --label",
            )
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


_TABLE_COLUMNS = ("id", "split", "file")


def _read_table(path: Path, label: str, reporter: Reporter, policy: ErrorPolicy) -> Dataset:
    """A table of numbers: one record per row, ``features`` from the numeric columns."""
    records: list[Record] = []
    features: list[str] = []
    try:
        text = decode_text(read_bytes(path, "CSV file"), path)
        reader = _csv.reader(io.StringIO(text, newline=""))
        try:
            header = [cell.strip() for cell in next(reader, [])]
            if label not in header:
                columns = ", ".join(header) or "none"
                raise RecordError(
                    path, 1, label, f"no column {label!r} in the header ({short(columns)})"
                )
            twice = sorted({h for h in header if header.count(h) > 1})
            if twice:
                raise RecordError(path, 1, "", f"column {twice[0]!r} appears twice in the header")
            lower = [h.lower() for h in header]
            features = [
                h for h, low in zip(header, lower, strict=True)
                if h != label and low not in _TABLE_COLUMNS
            ]  # fmt: skip
            if not features:
                raise RecordError(path, 1, "", "no feature columns beside the label column")
            seen: dict[str, int] = {}
            rows = 0
            with reporter.task("Reading CSV") as task:
                for cells in reader:
                    task.advance()
                    if cells:
                        rows += 1
                        row = _Row(header, cells)
                        if len(cells) != len(header):
                            message = (
                                f"{len(cells)} values for {len(header)} columns; "
                                "quote values that hold commas"
                            )
                            row.found.append(("", message))
                        record = _table_record(row, rows - 1, label, features)
                        first = seen.setdefault(record.id, reader.line_num)
                        if first != reader.line_num:
                            row.found.append(("id", f"duplicate id (first at line {first})"))
                        if not policy.reject(path, reader.line_num, row.found):
                            records.append(record)
        except _csv.Error as exc:
            raise RecordError(path, reader.line_num, "", f"not readable as CSV: {exc}") from None
    except RecordError as exc:
        policy.fail_error(exc)
    policy.finish(path)
    if not records and not policy.skipped:
        raise DatasetError(f"{path}: no rows")
    dataset = Dataset.from_records(records, name=path.stem, root=path.parent, source="CSV")
    dataset.info = DatasetInfo(
        name=dataset.info.name,
        source=dataset.info.source,
        classes=dataset.info.classes,
        attributes={"feature_names": features, "label_column": label},
    )
    return dataset


def _table_record(row: _Row, index: int, label: str, features: list[str]) -> Record:
    values: list[float] = []
    for column in features:
        value = row.number(column)
        if value is None and not any(f == column for f, _ in row.found):
            row.found.append((column, "empty; every feature needs a number"))
        values.append(value if value is not None else 0.0)
    lowered = {key.lower(): value for key, value in row.cells.items()}
    file = (lowered.get("file") or "").strip() or None
    if file is not None:
        problem = path_problem(file)
        if problem is not None:
            row.found.append(("file", problem))
    name = row.text(label)
    return Record(
        id=(lowered.get("id") or "").strip() or str(index),
        file=file,
        features=values,
        labels=[name] if name else [],
        split=(lowered.get("split") or "").strip() or None,
    )


def _write_table(dataset: Dataset, out: Output, reporter: Reporter) -> None:
    """One row per record: ``id``, ``split``, the label column, then the features."""
    records = list(dataset)
    names = dataset.info.attributes.get("feature_names")
    label = str(dataset.info.attributes.get("label_column") or "label")
    policy = ErrorPolicy()
    rows: list[list[str]] = []
    width = None
    with reporter.task("Writing CSV", total=len(records)) as task:
        for number, record in enumerate(records, start=1):
            task.advance()
            found: list[tuple[str, str]] = []
            if len(record.labels) > 1:
                found.append(("labels", "a CSV table holds one label per row"))
            if record.features is None:
                found.append(("features", "a CSV table needs features in every record"))
            values = [] if record.features is None else list(dataset.features(record))
            width = len(values) if width is None else width
            if record.features is not None and len(values) != width:
                found.append(("features", f"{len(values)} numbers, the first record has {width}"))
            if policy.reject(f"{out.target} (CSV)", None, found, number):
                continue
            head = [record.id, record.split or "", record.labels[0] if record.labels else ""]
            rows.append(head + [_cell(float(v)) for v in values])
    policy.finish(out.target)
    if not isinstance(names, list) or len(names) != (width or 0):
        names = [f"f{i}" for i in range(width or 0)]
    buffer = io.StringIO()
    writer = _csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "split", label, *map(str, names)])
    writer.writerows(rows)
    out.write(out.file or "table.csv", buffer.getvalue().encode("utf-8"))


def _cell(value: float | int | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def write(dataset: Dataset, out: Output, reporter: Reporter | None = None) -> None:
    """Write one row per box (and one row for each image without boxes) into the target
    file (a folder gets ``boxes.csv``); ``file`` keeps each record's relative path and the
    images come along beside the CSV. Records of numbers (``features``) are written as
    a table instead: ``id,split,<label>,<features...>`` (a folder gets ``table.csv``).
    """
    reporter = reporter or NullReporter()
    records = list(dataset)
    if any(record.features is not None for record in records):
        _write_table(dataset, out, reporter)
        return
    buffer = io.StringIO()
    writer = _csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    with reporter.task("Writing CSV", total=len(records)) as task:
        for record in records:
            head = [record.id, record.file or "", _cell(record.width), _cell(record.height)]
            head.append(record.split or "")
            if not record.boxes:
                writer.writerow([*head, "", "", "", "", ""])
            for box in record.boxes:
                corners = [_cell(box.x1), _cell(box.y1), _cell(box.x2), _cell(box.y2)]
                writer.writerow([*head, box.name, *corners])
            out.place(dataset.root, record.file or "")
            task.advance()
    out.write(out.file or "boxes.csv", buffer.getvalue().encode("utf-8"))
