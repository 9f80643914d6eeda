"""Class encodings: the fixed ids of a dataset, or a subset's own contiguous ids.

A :class:`ClassEncoding` maps class names to integers. An experiment that trains on a
subset of classes gets labels in the subset's contiguous encoding, and saves that
encoding (``labels.json``) next to the model so an export can decode predictions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from mlbook._fs import atomic_write_bytes
from mlbook.errors import DatasetError

__all__ = ["ClassEncoding"]

_FORMAT = "mlbook-labels"


class _Entry(msgspec.Struct, forbid_unknown_fields=True):
    id: int
    name: str


class _File(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    classes: list[_Entry]
    version: int = 1


class ClassEncoding:
    """Class names and their integer ids (both directions).

    Args:
        ids: name -> id; ids must be unique.
    """

    def __init__(self, ids: dict[str, int]) -> None:
        self._ids = dict(ids)
        self._names: dict[int, str] = {}
        for name, number in self._ids.items():
            if number in self._names:
                raise DatasetError(
                    f"class id {number} is used by both {self._names[number]!r} and {name!r}; "
                    "give each class its own id"
                )
            self._names[number] = name

    @classmethod
    def contiguous(cls, names: Iterable[str], start: int = 0) -> ClassEncoding:
        """Number ``names`` in the order given from ``start`` (use 1 for torchvision detectors,
        which keep 0 for the background)."""
        ordered = list(dict.fromkeys(names))
        return cls({name: start + index for index, name in enumerate(ordered)})

    def subset(self, names: Iterable[str], start: int = 0) -> ClassEncoding:
        """A contiguous encoding of some of these classes, in this encoding's id order.

        Raises:
            DatasetError: a name is not one of these classes.
        """
        wanted = list(dict.fromkeys(names))
        unknown = [name for name in wanted if name not in self._ids]
        if unknown:
            raise DatasetError(
                f"unknown class(es) {', '.join(map(repr, unknown))} in subset; "
                f"known: {', '.join(self.names)}"
            )
        chosen = set(wanted)
        return ClassEncoding.contiguous([n for n in self.names if n in chosen], start=start)

    @property
    def names(self) -> list[str]:
        """Names in id order."""
        return [self._names[number] for number in sorted(self._names)]

    def encode(self, name: str) -> int:
        """The id of ``name``.

        Raises:
            DatasetError: ``name`` is not in the encoding.
        """
        try:
            return self._ids[name]
        except KeyError:
            raise DatasetError(
                f"class {name!r} is not in the encoding ({', '.join(self.names)})"
            ) from None

    def decode(self, number: int) -> str:
        """The name of id ``number``.

        Raises:
            DatasetError: no class has that id.
        """
        try:
            return self._names[number]
        except KeyError:
            raise DatasetError(f"no class has id {number} in this encoding") from None

    def __contains__(self, name: object) -> bool:
        return name in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self._ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassEncoding) and self._ids == other._ids

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._ids.items())))

    def __repr__(self) -> str:
        return f"ClassEncoding({self.to_dict()!r})"

    def to_dict(self) -> dict[str, int]:
        """Name -> id, in id order."""
        return {name: self._ids[name] for name in self.names}

    def to_json(self) -> bytes:
        """The ``labels.json`` content."""
        entries = [_Entry(id=self._ids[name], name=name) for name in self.names]
        return msgspec.json.format(msgspec.json.encode(_File(format=_FORMAT, classes=entries)))

    def save(self, path: Path | str) -> Path:
        """Write the encoding as JSON (atomically) to ``path``, e.g. ``labels.json``."""
        atomic_write_bytes(path, self.to_json() + b"\n")
        return Path(path)

    @classmethod
    def from_json(cls, data: bytes | str, source: str = "<labels>") -> ClassEncoding:
        """Read an encoding written by :meth:`to_json`.

        Raises:
            DatasetError: the data is not a class encoding.
        """
        try:
            parsed = msgspec.json.decode(data, type=_File)
        except msgspec.DecodeError as exc:
            raise DatasetError(f"{source}: not a class encoding: {exc}") from exc
        if parsed.format != _FORMAT:
            raise DatasetError(f"{source}: format is {parsed.format!r}, expected {_FORMAT!r}")
        return cls({entry.name: entry.id for entry in parsed.classes})

    @classmethod
    def load(cls, path: Path | str) -> ClassEncoding:
        """Read ``labels.json`` written by :meth:`save`.

        Raises:
            DatasetError: the file is missing or not a class encoding.
        """
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read class encoding: {exc.strerror}") from exc
        return cls.from_json(data, str(path))

    @classmethod
    def coerce(cls, value: ClassEncoding | Iterable[str] | dict[str, int] | Any) -> ClassEncoding:
        """Accept an encoding, a name -> id mapping or a list of names (numbered from 0)."""
        if isinstance(value, ClassEncoding):
            return value
        if isinstance(value, dict):
            return cls(value)
        if isinstance(value, str):
            return cls.contiguous([value])
        return cls.contiguous(value)
