"""How dataset input goes wrong, in one place: problems, the error policy, safe reading.

Every reader (the native ``records.jsonl`` and each format) reports what is wrong with
its input to an :class:`ErrorPolicy` instead of stopping at the first bad record. At
the end, ``policy.finish(source)`` raises one :class:`~mlbook.errors.BadRecordsError`
listing them all (``on_error="fail"``, the default), or lets the reader return the
good records (``on_error="skip"``, the bad ones counted in ``policy.skipped``). A
problem with the input as a whole (unreadable file, bad JSON in a COCO file, two
categories with one id) is *fatal*: it fails under either policy.

The helpers below turn the low-level ways input fails (``OSError``, bad UTF-8, JSON
nested too deep for the decoder, paths that leave the dataset directory) into one
line naming the file, the line or element, and what to do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from mlbook.errors import BadRecordsError, DatasetError, RecordError

__all__ = [
    "SHOWN",
    "ErrorPolicy",
    "OnError",
    "Problem",
    "decode_json",
    "decode_text",
    "finite",
    "name_problem",
    "path_problem",
    "read_bytes",
    "short",
]

#: How many problems a failure message lists before "... and N more".
SHOWN = 50

#: What a reader does with a bad record: list every problem and fail, or leave it out.
OnError = Literal["fail", "skip"]

T = TypeVar("T")


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


class ErrorPolicy:
    """Collects the problems readers find and decides, at the end, to fail or to skip.

    Args:
        on_error: ``"fail"``: :meth:`finish` raises with every problem; ``"skip"``: the
            bad records are left out and counted in :attr:`skipped`.
        shown: how many problems the failure message lists.
        hint: what to do, appended to the failure message's first line.

    Attributes:
        problems: every problem found, in the order found.
        skipped: how many records were left out because of them.
    """

    def __init__(self, on_error: OnError = "fail", shown: int = SHOWN, hint: str = "") -> None:
        if on_error not in ("fail", "skip"):
            raise DatasetError(f"unknown error policy {on_error!r}; use 'fail' or 'skip'")
        self.on_error: OnError = on_error
        self.shown = shown
        self.hint = hint
        self.problems: list[Problem] = []
        self.skipped = 0
        self.fatal = 0
        self._rejected: set[object] = set()

    def reject(
        self,
        path: Path | str,
        line: int | None,
        found: Iterable[tuple[str, str]],
        record: int | None = None,
        key: object = None,
    ) -> bool:
        """Report the ``(field, problem)`` pairs of one record; True when there was any
        (the reader then leaves the record out).

        Args:
            record: the record's number, for inputs without lines (a JSON array).
            key: identifies the record when its problems come in several calls (from
                several files or elements); it is counted as skipped once.
        """
        before = len(self.problems)
        name = str(path)
        self.problems.extend(Problem(name, line, f, m, record) for f, m in found)
        if len(self.problems) == before:
            return False
        if key is None or key not in self._rejected:
            self.skipped += 1
            if key is not None:
                self._rejected.add(key)
        return True

    def reject_error(self, error: RecordError, key: object = None) -> bool:
        """Report a :class:`RecordError` raised while reading one record; always True."""
        return self.reject(error.path, error.line, [(error.field, error.problem)], key=key)

    def rejected(self, key: object) -> bool:
        """True when the record ``key`` has a problem."""
        return key in self._rejected

    def add(
        self,
        path: Path | str,
        line: int | None,
        field: str,
        message: str,
        record: int | None = None,
    ) -> None:
        """Report one more problem of a record already rejected (not counted again)."""
        self.problems.append(Problem(str(path), line, field, message, record))

    def fail(self, path: Path | str, line: int | None, field: str, message: str) -> None:
        """Report a problem with the input as a whole; it fails under either policy."""
        self.problems.append(Problem(str(path), line, field, message))
        self.fatal += 1

    def fail_error(self, error: RecordError) -> None:
        """Report a :class:`RecordError` about the input as a whole (fatal)."""
        self.fail(error.path, error.line, error.field, error.problem)

    def finish(self, source: Path | str) -> None:
        """Raise :class:`BadRecordsError` when the policy says so; return otherwise.

        Raises:
            BadRecordsError: a fatal problem, or any problem under ``"fail"``.
        """
        if not self.problems or (self.on_error == "skip" and not self.fatal):
            return
        hint = self.hint if not self.fatal else ""
        raise BadRecordsError(source, self.problems, self.skipped, self.shown, hint)


def read_bytes(path: Path, what: str = "file") -> bytes:
    """The content of ``path``, or one clear :class:`DatasetError` saying why not.

    Args:
        what: what the file should be, for the message (``"records file"``).
    """
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a directory, not a {what}") from None
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such {what}") from None
    except PermissionError:
        raise DatasetError(
            f"{path}: cannot read the {what} (permission denied); check its permissions"
        ) from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from exc


def decode_text(data: bytes, path: Path | str) -> str:
    """UTF-8 text (a leading BOM dropped).

    Raises:
        RecordError: not UTF-8, naming the line and column of the first bad byte.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise RecordError(
            path,
            line,
            "",
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column}); "
            "save the file as UTF-8",
        ) from None


_FIELD_AT = re.compile(r" - at `\$(.*)`$")


def decode_json(data: bytes, path: Path | str, kind: type[T], what: str) -> T:
    """Decode JSON ``data`` as ``kind`` (msgspec types).

    Args:
        what: what the file should be, for messages (``"COCO instances"``).

    Raises:
        RecordError: bad JSON (with its column), a wrong type (with the field), or
            nesting too deep to decode.
    """
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _FIELD_AT.search(message)
        field = match.group(1).lstrip(".") if match else ""
        problem = message[: match.start()] if match else message
        raise RecordError(path, None, field, f"not {what}: {problem}") from None
    except msgspec.DecodeError as exc:
        raise RecordError(path, None, "", f"bad JSON: {str(exc).lower()}") from None
    except RecursionError:
        raise RecordError(path, None, "", f"not {what}: JSON nested too deeply to read") from None


def finite(value: float) -> bool:
    """True for a number that is neither NaN nor infinite."""
    return math.isfinite(value)


_DRIVE = re.compile(r"^[A-Za-z]:")


def path_problem(value: str) -> str | None:
    """What is wrong with ``value`` as a path inside a dataset directory, or ``None``.

    A record's ``file`` and ``mask`` (and every path a converter reads from an
    annotation file) must be relative, use ``/``, and stay inside the directory once
    ``..`` parts are applied. The check is on the text alone: a symbolic link placed
    inside the directory is followed like any file.
    """
    fix = "give a path relative to the dataset directory, inside it"
    if not value:
        return f"empty path; {fix}"
    if "\x00" in value:
        return f"path contains a NUL character ({short(value)}); {fix}"
    if "\\" in value:
        return f"path uses '\\' ({short(value)}); separate folders with '/'"
    if value.startswith("/") or _DRIVE.match(value):
        return f"absolute path ({short(value)}); {fix}"
    depth = 0
    for part in value.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return f"path leaves the dataset directory ({short(value)}); {fix}"
        elif part not in ("", "."):
            depth += 1
    if depth == 0:
        return f"path names the dataset directory itself ({short(value)}); {fix}"
    return None


def name_problem(value: str) -> str | None:
    """What is wrong with ``value`` as one file name (no folders), or ``None``."""
    if not value or value in (".", "..") or any(c in value for c in "/\\\x00"):
        return f"cannot be used as a file name ({short(value)}); use letters, digits, '-', '_'"
    return None


def short(value: Any) -> str:
    """``repr(value)``, cut to 60 characters."""
    if isinstance(value, str | bytes) and len(value) > 60:
        value = value[:60]
    try:
        text = repr(value)
    except RecursionError:
        return "(nested too deeply to show)"
    return text if len(text) <= 60 else text[:57] + "..."
