"""CSV, one row per box, both ways.

Columns: ``id,file,width,height,split,name,x1,y1,x2,y2``; an image without boxes is one
row with an empty ``name``. On input, common aliases are accepted (``filename``/``image``
for ``file``, ``label``/``class`` for ``name``, ``xmin``/``ymin``/``xmax``/``ymax``); the
``id`` column is optional (the file path is used).
"""

from __future__ import annotations

import csv as _csv
import io
from pathlib import Path

from mlbook._fs import atomic_write_text
from mlbook.datasets.dataset import Dataset
from mlbook.datasets.metadata import Box, Record
from mlbook.errors import DatasetError, RecordError
from mlbook.progress import NullReporter, Reporter

__all__ = ["COLUMNS", "NAME", "detect", "read", "write"]

NAME = "csv"
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


def _number(value: str, path: Path, line: int, field: str) -> float | None:
    if value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise RecordError(path, line, field, f"not a number ({value!r})") from None


def read(path: Path, reporter: Reporter | None = None) -> Dataset:
    """Read a CSV file (one row per box); rows of one image are grouped by ``id``/``file``."""
    reporter = reporter or NullReporter()
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = _csv.DictReader(handle)
        header = [
            _ALIASES.get(h.strip().lower(), h.strip().lower()) for h in reader.fieldnames or []
        ]
        if "file" not in header:
            raise RecordError(
                path, 1, "file", f"no file column in the header ({', '.join(header)})"
            )
        reader.fieldnames = header
        records: dict[str, Record] = {}
        with reporter.task("Reading CSV") as task:
            for line, row in enumerate(reader, start=2):
                key = (row.get("id") or "").strip() or row["file"]
                record = records.get(key)
                if record is None:
                    width = _number(row.get("width") or "", path, line, "width")
                    height = _number(row.get("height") or "", path, line, "height")
                    record = Record(
                        id=key,
                        file=row["file"],
                        width=int(width) if width is not None else None,
                        height=int(height) if height is not None else None,
                        split=(row.get("split") or "").strip() or None,
                        boxes=[],
                    )
                    records[key] = record
                name = (row.get("name") or "").strip()
                if not name:
                    continue
                corners = [
                    _number(row.get(f) or "", path, line, f) for f in ("x1", "y1", "x2", "y2")
                ]
                if any(c is None for c in corners):
                    raise RecordError(path, line, "x1..y2", f"box {name!r} needs all four corners")
                x1, y1, x2, y2 = (float(c or 0) for c in corners)
                record.boxes.append(Box(name=name, x1=x1, y1=y1, x2=x2, y2=y2))
                task.advance()
    if not records:
        raise DatasetError(f"{path}: no rows")
    return Dataset.from_records(
        list(records.values()), name=path.stem, root=path.parent, source="CSV"
    )


def _cell(value: float | int | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def write(dataset: Dataset, path: Path, reporter: Reporter | None = None) -> Path:
    """Write one row per box (and one row for each image without boxes) to ``path``.

    ``file`` is relative to the CSV's folder.
    """
    reporter = reporter or NullReporter()
    target = path if path.suffix.lower() == ".csv" else path / "boxes.csv"
    records = dataset.rebased(target.parent) if dataset.root is not None else list(dataset)
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
            task.advance()
    atomic_write_text(target, buffer.getvalue())
    return target
