"""The one dataset metadata model: records, boxes, the dataset description; load and save.

A dataset directory holds ``dataset.json`` (:class:`DatasetInfo`) and ``records.jsonl``
(one :class:`Record` per line; a ``records.json`` array is accepted on input). Input may
use the loose forms people write by hand (``labels`` as one string, ``counts`` as a list
of one-key objects, an integer ``id``; in ``dataset.json``, ``classes`` as a list of
names and no ``name``); mlbook always writes the canonical form (:func:`encode_records`,
:func:`encode_info`), except that a list of class names stays a list of names. Reading a
whole records file, with every problem collected, is
:func:`mlbook.datasets.validate.read_records`.

A record is one image (``file``), or one sample of numbers (``features``: the numbers
themselves or a :class:`TableRef` to a row of a table file), or both.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from mlbook.datasets.problems import read_bytes, short
from mlbook.errors import RecordError

__all__ = [
    "DATASET_FILE",
    "RECORDS_ARRAY_FILE",
    "RECORDS_FILE",
    "SCHEMA_VERSION",
    "Box",
    "ClassInfo",
    "DatasetInfo",
    "Record",
    "TableRef",
    "decode_record",
    "decode_records_fast",
    "encode_info",
    "encode_records",
    "iter_lines",
    "load_info",
    "no_gc",
    "records_path",
    "save_dataset",
]

SCHEMA_VERSION = 1
DATASET_FILE = "dataset.json"
RECORDS_FILE = "records.jsonl"
RECORDS_ARRAY_FILE = "records.json"

#: COCO polygons (a list of flat ``[x, y, x, y, ...]`` lists) or RLE (``{"counts", "size"}``).
Segmentation = list[list[float]] | dict[str, Any]


class Box(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True, gc=False):
    """An object's box in absolute pixel corners; may carry its segmentation."""

    name: str
    x1: float
    y1: float
    x2: float
    y2: float
    iscrowd: bool = False
    segmentation: Segmentation | None = None
    attributes: dict[str, Any] = {}

    @property
    def width(self) -> float:
        """``x2 - x1``."""
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        """``y2 - y1``."""
        return self.y2 - self.y1


class TableRef(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    """A row of a table file inside the dataset directory: the record's features.

    ``table`` is a ``.parquet`` (needs pyarrow), ``.npy`` (a 2-D array of numbers) or
    ``.csv`` (numbers, an optional header row) path relative to the dataset directory;
    ``row`` counts data rows from 0.
    """

    table: str
    row: int


#: A record's features: the numbers themselves, or where to find them.
Features = list[float] | TableRef


class Record(
    msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True, gc=False
):
    """One image (or sample) and what is in it; ``file`` and ``mask`` are relative paths.

    A record has ``file`` (an image), ``features`` (numbers, or a :class:`TableRef`),
    or both.
    """

    id: str
    file: str | None = None
    features: Features | None = None
    width: int | None = None
    height: int | None = None
    labels: list[str] = []
    counts: dict[str, int] = {}
    boxes: list[Box] = []
    mask: str | None = None
    split: str | None = None
    attributes: dict[str, Any] = {}


class _LooseRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The forms accepted on input; normalised into a :class:`Record`."""

    id: str | int
    file: str | None = None
    features: Features | None = None
    width: int | None = None
    height: int | None = None
    labels: str | list[str] = []
    counts: dict[str, int] | list[dict[str, int]] = {}
    boxes: list[Box] = []
    mask: str | None = None
    split: str | None = None
    attributes: dict[str, Any] = {}


class ClassInfo(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """A class and its fixed integer id (COCO category ids are kept as they are)."""

    id: int
    name: str
    attributes: dict[str, Any] = {}


class DatasetInfo(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """The content of ``dataset.json``: what the dataset is and its class encoding.

    ``classes_as_names`` is not a field of the file: it is set when ``dataset.json``
    listed its classes as plain names, so that they are written back as names (as long
    as the ids are still 0, 1, 2... in order and no class has attributes).
    """

    name: str
    description: str = ""
    source: str = ""
    licence: str = ""
    classes: list[ClassInfo] = []
    splits: dict[str, int] = {}
    attributes: dict[str, Any] = {}
    schema_version: int = SCHEMA_VERSION
    classes_as_names: bool = False

    @property
    def class_names(self) -> list[str]:
        """Class names in id order."""
        return [c.name for c in sorted(self.classes, key=lambda c: c.id)]


class _LooseInfo(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``dataset.json`` as accepted on input: ``classes`` may be plain names (ids 0, 1,
    2... in order, or objects with their ids); ``name`` defaults to the directory's."""

    name: str = ""
    description: str = ""
    source: str = ""
    licence: str = ""
    classes: list[ClassInfo | str] = []
    splits: dict[str, int] = {}
    attributes: dict[str, Any] = {}
    schema_version: int = SCHEMA_VERSION


def _info_of(loose: _LooseInfo, default_name: str) -> DatasetInfo:
    classes = [
        ClassInfo(id=index, name=entry) if isinstance(entry, str) else entry
        for index, entry in enumerate(loose.classes)
    ]
    return DatasetInfo(
        name=loose.name or default_name,
        description=loose.description,
        source=loose.source,
        licence=loose.licence,
        classes=classes,
        splits=loose.splits,
        attributes=loose.attributes,
        schema_version=loose.schema_version,
        classes_as_names=bool(loose.classes) and all(isinstance(c, str) for c in loose.classes),
    )


def _names_only(classes: list[ClassInfo]) -> bool:
    """True when ``classes`` can be written as a list of names (ids 0, 1, 2... in order)."""
    return all(c.id == index and not c.attributes for index, c in enumerate(classes))


_RECORD_DECODER = msgspec.json.Decoder(Record)
_RECORDS_ARRAY_DECODER = msgspec.json.Decoder(list[Record])
_INFO_DECODER = msgspec.json.Decoder(_LooseInfo)
_ENCODER = msgspec.json.Encoder()
_ARRAY_START = re.compile(rb"\s*\[")
_NAMED_FIELD = re.compile(
    r"^Object (contains unknown|missing required) field `(.*?)`(?: - at `(\$.*)`)?$", re.DOTALL
)
_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many objects at once.

    Building a few hundred thousand lists and structs otherwise triggers repeated full
    collections, which can double the time of a large import. Records hold no cycles.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _normalise(loose: _LooseRecord) -> Record:
    labels = [loose.labels] if isinstance(loose.labels, str) else loose.labels
    if isinstance(loose.counts, list):
        counts: dict[str, int] = {}
        for item in loose.counts:
            for key, value in item.items():
                counts[key] = counts.get(key, 0) + value
    else:
        counts = loose.counts
    return Record(
        id=str(loose.id),
        file=loose.file,
        features=loose.features,
        width=loose.width,
        height=loose.height,
        labels=labels,
        counts=counts,
        boxes=loose.boxes,
        mask=loose.mask,
        split=loose.split,
        attributes=loose.attributes,
    )


def _value_at(obj: Any, path: str) -> Any:
    """The value at a msgspec error path like ``$.boxes[0].x1`` (``...`` when absent)."""
    current = obj
    for key, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path.removeprefix("$")):
        try:
            current = current[int(index)] if index else current[key]
        except (KeyError, IndexError, TypeError):
            return ...
    return current


def decode_record(data: bytes | str | Any, path: Path | str = "<record>", line: int = 1) -> Record:
    """Parse one record (JSON text or an already decoded object), loose forms accepted.

    Raises:
        RecordError: naming ``path:line``, the field and the bad value.
    """
    if isinstance(data, bytes | str):
        try:
            obj = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise RecordError(path, line, "", _json_problem(exc, data)) from exc
        except RecursionError:
            raise RecordError(path, line, "", "JSON nested too deeply to read") from None
    else:
        obj = data
    if not isinstance(obj, dict):
        raise RecordError(path, line, "", f"a record must be a JSON object, got {short(obj)}")
    try:
        loose = msgspec.convert(obj, _LooseRecord)
    except RecursionError:
        raise RecordError(path, line, "", "JSON nested too deeply to read") from None
    except msgspec.ValidationError as exc:
        message = str(exc)
        named = _NAMED_FIELD.match(message)
        if named:
            kind, name, where = named.groups()
            parent = (where or "").removeprefix("$").lstrip(".")
            name = name if _PLAIN_NAME.match(name) else repr(name)
            field = f"{parent}.{name}" if parent else name
            problem = (
                "unknown field (put free data under `attributes`)"
                if kind == "contains unknown"
                else "required field is missing"
            )
        else:
            problem, where = message, ""
            if " - at `" in message:
                problem, _, where = message.rpartition(" - at `")
            where = where.rstrip("`")
            field = where.removeprefix("$").lstrip(".")
            value = short(_value_at(obj, where))
            problem = f"{problem[0].lower()}{problem[1:]} ({value})"
        raise RecordError(path, line, field, problem) from exc
    return _normalise(loose)


def _json_problem(exc: msgspec.DecodeError, data: bytes | str) -> str:
    """Turn msgspec's ``(byte N)`` position into a 1-based column."""
    message = str(exc)
    if "truncated" in message:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        column = len(text.rstrip("\r\n").rsplit("\n", 1)[-1]) + 1
        return f"bad JSON at column {column}: the line ends inside an object, list or string"
    match = re.search(r"\(byte (\d+)\)", message)
    if match:
        raw = data.encode() if isinstance(data, str) else data
        offset = int(match.group(1))
        before = raw[:offset]
        line_in = before.count(b"\n")
        column = offset - (before.rfind(b"\n") + 1) + 1
        where = f"column {column}" if not line_in else f"line +{line_in}, column {column}"
        return f"bad JSON at {where}: {message.split(' (byte')[0].lower()}"
    return f"bad JSON: {message.lower()}"


def iter_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, line) for non-blank lines of JSON Lines data."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.strip():
            yield number, raw


def decode_records_fast(data: bytes) -> list[Record] | None:
    """Records in the canonical form, decoded in one typed pass; ``None`` when the data
    is not all canonical (loose forms, bad JSON), so that the caller reads it record by
    record instead. JSON Lines, or a JSON array when the data starts with ``[``."""
    try:
        if _ARRAY_START.match(data):
            return _RECORDS_ARRAY_DECODER.decode(data)
        return _RECORD_DECODER.decode_lines(data)
    except (msgspec.DecodeError, RecursionError):
        return None


def records_path(root: Path) -> Path:
    """``records.jsonl`` in ``root``, or ``records.json`` when only that exists."""
    jsonl = root / RECORDS_FILE
    if not jsonl.exists() and (root / RECORDS_ARRAY_FILE).exists():
        return root / RECORDS_ARRAY_FILE
    return jsonl


def load_info(root: Path | str) -> DatasetInfo | None:
    """Read ``dataset.json`` of ``root``; ``None`` when there is none. Classes given as
    plain names get the ids 0, 1, 2... in order; without ``name``, the directory's name.

    Raises:
        DatasetError: the file cannot be read; RecordError: it is not valid JSON or has
        wrong fields.
    """
    path = Path(root) / DATASET_FILE
    if not path.exists() and not path.is_symlink():
        return None
    data = read_bytes(path, "dataset description (dataset.json)")
    try:
        return _info_of(_INFO_DECODER.decode(data), Path(root).resolve().name)
    except RecursionError:
        raise RecordError(path, None, "", "JSON nested too deeply to read") from None
    except msgspec.DecodeError as exc:
        message = str(exc)
        if isinstance(exc, msgspec.ValidationError):
            problem, _, where = message.partition(" - at `")
            field = where.rstrip("`").removeprefix("$").lstrip(".")
            raise RecordError(path, None, field, problem) from exc
        raise RecordError(path, None, "", _json_problem(exc, data)) from exc


def encode_records(records: Iterable[Record]) -> Iterator[bytes]:
    """Yield each record as one canonical JSON line (with its newline)."""
    encode = _ENCODER.encode
    for record in records:
        yield encode(record) + b"\n"


def encode_info(info: DatasetInfo, records: Iterable[Record]) -> bytes:
    """``dataset.json`` for ``info``, its ``splits`` recomputed from ``records``; classes
    as a list of names when they were read as one and their ids allow it."""
    splits: dict[str, int] = {}
    for record in records:
        if record.split is not None:
            splits[record.split] = splits.get(record.split, 0) + 1
    names = info.classes_as_names and _names_only(info.classes)
    info = msgspec.structs.replace(
        info, splits=dict(sorted(splits.items())), classes_as_names=False
    )
    document: dict[str, Any] = msgspec.to_builtins(info)
    if names:
        document["classes"] = [c.name for c in info.classes]
    return msgspec.json.format(_ENCODER.encode(document)) + b"\n"


def save_dataset(root: Path | str, info: DatasetInfo, records: list[Record]) -> Path:
    """Write ``dataset.json`` and ``records.jsonl`` into ``root``, all or nothing, canonical
    form (``info.splits`` recomputed); :meth:`Dataset.save
    <mlbook.datasets.Dataset.save>` for records already in a directory.

    Raises:
        BadRecordsError: a record :func:`~mlbook.datasets.open_dataset` would refuse.
    """
    from mlbook.datasets.dataset import Dataset

    return Dataset(info, records).save(root)
