"""Records that are numbers, not images: ``features`` inline or a row of a table file.

A record's ``features`` is a list of numbers, or a :class:`~mlbook.datasets.metadata.TableRef`
``{"table": "features.npy", "row": 12}`` naming a row of a table inside the dataset
directory. Tables:

- ``.npy``: a 2-D array of numbers (rows x features), read with ``allow_pickle=False``
  and memory-mapped, so a large table of embeddings is not read whole (needs numpy);
- ``.csv``: numbers, one row per sample, with an optional header row (plain Python);
- ``.parquet``: numeric columns, or one column of number lists (needs pyarrow: extra
  ``parquet``).

:class:`FeatureTables` opens each table once per dataset; :func:`table_rows` counts a
table's rows without loading it (validation).
"""

from __future__ import annotations

import ast
import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from mlbook.datasets.metadata import Record, TableRef
from mlbook.datasets.problems import decode_text, path_problem, read_bytes, short
from mlbook.errors import DatasetError, RecordError

__all__ = ["TABLE_SUFFIXES", "FeatureTables", "features_problem", "table_rows"]

TABLE_SUFFIXES = (".parquet", ".npy", ".csv")
_NPY_MAGIC = b"\x93NUMPY"
_NUMERIC_KINDS = frozenset("biuf")


def features_problem(features: list[float] | TableRef) -> str | None:
    """What is wrong with a record's ``features`` (the value alone), or ``None``."""
    if isinstance(features, TableRef):
        problem = path_problem(features.table)
        if problem is not None:
            return problem
        if not features.table.lower().endswith(TABLE_SUFFIXES):
            kinds = ", ".join(TABLE_SUFFIXES)
            return f"table {short(features.table)} is not one of {kinds}"
        if features.row < 0:
            return f"row must be 0 or more ({features.row})"
        return None
    if not features:
        return "empty; give at least one number"
    for index, value in enumerate(features):
        if not math.isfinite(value):
            return f"[{index}] is not a finite number ({value})"
    return None


def _npy_header(path: Path) -> tuple[str, tuple[int, ...], bool]:
    """``(dtype descr, shape, fortran order)`` from a ``.npy`` header, without numpy."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 10 or not head.startswith(_NPY_MAGIC):
                raise DatasetError(f"{path}: not a .npy file (no NUMPY header)")
            major = head[6]
            size_bytes = 2 if major == 1 else 4
            length = int.from_bytes(head[8 : 8 + size_bytes], "little")
            handle.seek(8 + size_bytes)
            text = handle.read(min(length, 65536)).decode("latin-1")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the table: {exc.strerror or exc}") from None
    try:
        header = ast.literal_eval(text.strip())
        descr, shape, fortran = header["descr"], tuple(header["shape"]), header["fortran_order"]
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError):
        raise DatasetError(f"{path}: not a .npy file (unreadable header)") from None
    if not isinstance(descr, str) or descr.lstrip("<>|=")[:1] not in _NUMERIC_KINDS:
        raise DatasetError(
            f"{path}: the array does not hold plain numbers (dtype {short(descr)}); "
            "save a 2-D array of numbers (objects would need unpickling, which mlbook refuses)"
        )
    if len(shape) != 2:
        raise DatasetError(
            f"{path}: the array has shape {shape}; a feature table is 2-D (rows x features)"
        )
    return descr, shape, bool(fortran)


def _csv_rows(path: Path) -> list[list[float]]:
    """The numeric rows of a CSV table (a first row with a non-number is a header)."""
    text = decode_text(read_bytes(path, "feature table"), path)
    rows: list[list[float]] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    width = None
    try:
        for cells in reader:
            if not cells:
                continue
            try:
                values = [float(cell) for cell in cells]
            except ValueError:
                if reader.line_num == 1:
                    continue  # the header
                raise RecordError(
                    path, reader.line_num, "", f"not numbers: {short(','.join(cells))}"
                ) from None
            if width is None:
                width = len(values)
            elif len(values) != width:
                raise RecordError(
                    path, reader.line_num, "", f"{len(values)} values, the first row has {width}"
                )
            if not all(math.isfinite(v) for v in values):
                raise RecordError(path, reader.line_num, "", "not finite numbers")
            rows.append(values)
    except csv.Error as exc:
        raise RecordError(path, reader.line_num, "", f"not readable as CSV: {exc}") from None
    return rows


def _parquet(path: Path) -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``, or one line saying how to install them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(
            f"{path}: reading .parquet tables needs pyarrow; "
            "install it with `pip install mlbook[parquet]`"
        ) from None
    return pa, pq


def _rows(path: Path) -> int:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DatasetError(f"{path}: no such table file")
    if suffix == ".npy":
        return _npy_header(path)[1][0]
    if suffix == ".csv":
        try:
            return len(_csv_rows(path))
        except RecordError as exc:
            raise DatasetError(str(exc)) from None
    pa, pq = _parquet(path)
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DatasetError(f"{path}: not a readable Parquet file: {exc}") from None


_ROWS: dict[tuple[str, int, int], int] = {}


def table_rows(path: Path) -> int:
    """How many data rows the table at ``path`` has (cached while the file is unchanged).

    Raises:
        DatasetError: missing, unreadable, not a table of numbers, or pyarrow missing
        for ``.parquet``.
    """
    try:
        stat = os.stat(path)
    except OSError:
        raise DatasetError(f"{path}: no such table file") from None
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _ROWS:
        _ROWS[key] = _rows(path)
    return _ROWS[key]


class FeatureTables:
    """Reads records' features, opening each table of a dataset once.

    Args:
        root: the dataset directory tables are relative to.
    """

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._tables: dict[str, Any] = {}

    def features(self, record: Record) -> list[float]:
        """The numbers of ``record``: its ``features``, or its row of the table.

        Raises:
            DatasetError: the record has no features, its table cannot be read, or the
            row is past the table's end.
        """
        features = record.features
        if features is None:
            raise DatasetError(f"record {record.id!r} has no features (it is an image record)")
        if not isinstance(features, TableRef):
            return features
        problem = features_problem(features)
        if problem is not None:
            raise DatasetError(f"record {record.id!r}: features: {problem}")
        table = self._table(features.table)
        if features.row >= len(table):
            raise DatasetError(
                f"record {record.id!r}: row {features.row} is past the end of "
                f"{features.table} ({len(table)} rows)"
            )
        row = table[features.row]
        values: list[float] = row.tolist() if hasattr(row, "tolist") else list(row)
        return values

    def _table(self, relative: str) -> Any:
        if relative not in self._tables:
            base = self.root if self.root is not None else Path.cwd()
            self._tables[relative] = _load(base / relative)
        return self._tables[relative]


def _load(path: Path) -> Any:
    """The table as something indexable by row: a list of lists or a numpy array."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DatasetError(f"{path}: no such table file")
    if suffix == ".csv":
        try:
            return _csv_rows(path)
        except RecordError as exc:
            raise DatasetError(str(exc)) from None
    try:
        import numpy as np
    except ImportError:
        raise DatasetError(
            f"{path}: reading {suffix} tables needs numpy; install it with "
            "`pip install mlbook[images]`"
        ) from None
    if suffix == ".npy":
        _npy_header(path)  # refuses object arrays and other shapes with one clear line
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot read the table: {exc}") from None
    pa, pq = _parquet(path)
    try:
        table = pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DatasetError(f"{path}: not a readable Parquet file: {exc}") from None
    return _parquet_array(path, table, pa, np)


def _parquet_array(path: Path, table: Any, pa: Any, np: Any) -> Any:
    columns = table.columns
    if len(columns) == 1 and (
        pa.types.is_list(columns[0].type)
        or pa.types.is_fixed_size_list(columns[0].type)
        or pa.types.is_large_list(columns[0].type)
    ):
        rows = columns[0].to_pylist()
        widths = {len(row) if row is not None else -1 for row in rows}
        if len(widths) > 1 or -1 in widths:
            raise DatasetError(f"{path}: the lists in column {table.column_names[0]!r} differ")
        return np.asarray(rows, dtype=np.float64)
    for name, column in zip(table.column_names, columns, strict=True):
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise DatasetError(
                f"{path}: column {name!r} is {column.type}, not numbers; a feature table "
                "holds numeric columns or one column of number lists"
            )
        if column.null_count:
            raise DatasetError(f"{path}: column {name!r} has empty values")
    return np.column_stack([column.to_numpy() for column in columns]).astype(np.float64)
