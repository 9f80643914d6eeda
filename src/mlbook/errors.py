"""The errors a user can cause, as one tree.

Every error mlbook raises on purpose derives from :class:`MlbookError`; the CLI
prints its message as one line (``error: ...``) and exits 1. Anything else is a
bug and keeps its traceback.

::

    MlbookError
     ├── ProjectError            not a project, a bad layout, an unreadable file
     │    └── ConfigError        mlbook.toml is not valid (file, line, key, expected)
     ├── DatasetError            dataset metadata or a conversion went wrong
     │    ├── RecordError        one bad record (file, line, field, value)
     │    ├── BadRecordsError    every bad record a reader found (a list of problems)
     │    ├── DvcFileError       a malformed .dvc, dvc.lock or dvc.yaml (file, line, key)
 │    └── QueryError         a dataset query that cannot be read or run (column, expected)
     ├── ExperimentError         unknown experiment or version, a bad script
     ├── StoreError              the run store cannot be read or written
     ├── ProvenanceError         git snapshots, the journal, diffs
     ├── ExportError             an export cannot be written, verified or loaded
     └── TransferError           a pack cannot be made, checked or unpacked; a remote or
                                 an MLflow store cannot be reached or read

Subclasses keep the facts (path, line, key) as attributes and build the message
from them; the underlying error stays in ``__cause__``.

:class:`MlbookWarning` is what a failed side channel (a journal update, a git
snapshot) raises as a warning: the run goes on, and the CLI prints it as one line
``warning: ...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "BadRecordsError",
    "ConfigError",
    "DatasetError",
    "DvcFileError",
    "ExperimentError",
    "ExportError",
    "MlbookError",
    "MlbookWarning",
    "ProjectError",
    "ProvenanceError",
    "QueryError",
    "RecordError",
    "StoreError",
    "TransferError",
]


class MlbookError(Exception):
    """Root of every error a user can cause; its message is one line."""


class MlbookWarning(UserWarning):
    """A side channel failed (journal, snapshot); the run itself went on."""


class ProjectError(MlbookError):
    """The project cannot be found, read or laid out."""


class ConfigError(ProjectError):
    """A project config file is not valid.

    Args:
        path: the config file.
        problem: what is wrong, including what is expected.
        line: the 1-based line of the offending key when it can be found.
    """

    def __init__(self, path: Path | str, problem: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        self.line = line
        where = f"{self.path}:{line}" if line else str(self.path)
        super().__init__(f"{where}: {problem}")


class DatasetError(MlbookError):
    """Dataset metadata cannot be read, validated or converted."""


class RecordError(DatasetError):
    """One record is wrong.

    Args:
        path: the file holding the record.
        line: 1-based line (JSON Lines) or record index (JSON array).
        field: the field at fault, dotted for nested fields (``boxes[2].x1``).
        problem: what is wrong, with the value.
    """

    def __init__(self, path: Path | str, line: int | None, field: str, problem: str) -> None:
        self.path = Path(path)
        self.line = line
        self.field = field
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")


class BadRecordsError(DatasetError):
    """Every problem a reader found in its input, reported at once.

    The message's first line says what and how many; then one line per problem (at
    most ``shown``), then ``... and N more``. With a single problem the message is
    that problem's line alone (the hint left out).

    Args:
        source: what was read (a file or a directory).
        problems: each problem (``file:line: field: what``), in the order found.
        records: how many records are bad.
        shown: how many problems the message lists.
        hint: what to do, added to the first line.
    """

    def __init__(
        self,
        source: Path | str,
        problems: Sequence[object],
        records: int,
        shown: int = 50,
        hint: str = "",
    ) -> None:
        self.source = Path(source)
        self.problems = list(problems)
        self.records = records
        count = len(self.problems)
        if count == 1:
            message = str(self.problems[0])
        else:
            bad = f" in {records} record(s)" if records else ""
            lines = [f"{self.source}: {count} problem(s){bad}" + (f"; {hint}" if hint else "")]
            lines += [f"  {problem}" for problem in self.problems[:shown]]
            if count > shown:
                lines.append(f"  ... and {count - shown} more")
            message = "\n".join(lines)
        super().__init__(message)


class DvcFileError(DatasetError):
    """A ``.dvc``, ``dvc.lock`` or ``dvc.yaml`` file that cannot be read.

    Args:
        path: the file, as shown (root-relative).
        problem: what is wrong.
        line: the 1-based line, when known.
        key: the dotted key at fault (``outs[0].md5``), when there is one.
    """

    def __init__(
        self, path: Path | str, problem: str, line: int | None = None, key: str = ""
    ) -> None:
        self.path = Path(path)
        self.problem = problem
        self.line = line
        self.key = key
        where = f"{path}:{line}" if line else str(path)
        head = f"{where}: {key}: {problem}" if key else f"{where}: {problem}"
        super().__init__(f"{head}; fix the file, or write it again with `dvc add` / `dvc commit`")


class QueryError(DatasetError):
    """A dataset query (text, builder, raw SQL or saved view) cannot be parsed or run.

    Args:
        problem: what is wrong and what to do.
        column: 1-based column of the query text at fault (``None``: not about a position).
    """

    def __init__(self, problem: str, column: int | None = None) -> None:
        self.problem = problem
        self.column = column
        super().__init__(f"col {column}: {problem}" if column is not None else problem)


class ExperimentError(MlbookError):
    """An experiment script, its versions or a run request is wrong."""


class StoreError(MlbookError):
    """The run store cannot be opened, migrated, read or written."""


class ProvenanceError(MlbookError):
    """A git snapshot, the journal or a diff cannot be made."""


class ExportError(MlbookError):
    """An export cannot be written, verified or loaded."""


class TransferError(MlbookError):
    """Runs cannot be packed, unpacked, pulled, pushed or imported from MLflow."""
