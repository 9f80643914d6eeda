"""Terminal output: the only module that imports rich.

Commands build library results and hand them here to print: tables, coloured
status words, JSON, and a rich progress reporter that plugs into
:class:`mlbook.progress.Reporter`.

Tables have one renderer, :func:`print_table`: a rich table on a terminal, the
same columns as plain aligned text (never cut, no markup) when piped. Commands
that list library results build the rows from their ``to_dict()`` with
:class:`Column` and :func:`print_records`, the same dicts ``--format json`` prints.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import click
import orjson
from rich.console import Console
from rich.errors import MarkupError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

__all__ = [
    "Column",
    "RichReporter",
    "console",
    "err_console",
    "print_json",
    "print_records",
    "print_table",
]

# Piped output (files, pagers, other tools) gets room for whole run ids instead of
# rich's 80-column default; a terminal or COLUMNS decides otherwise.
_PIPE_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200
console = Console(highlight=False, soft_wrap=True, width=_PIPE_WIDTH)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

Justify = Literal["left", "right"]


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (no colour, for tools)."""
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


@dataclass(frozen=True)
class Column:
    """One column of a table of records (dicts from a library result's ``to_dict()``).

    Attributes:
        header: the column's title.
        value: the record's key, or a function of the record giving the value.
        style: a rich style for a value (terminal only), e.g. a colour by status.
        justify: ``left`` or ``right``.
    """

    header: str
    value: str | Callable[[Mapping[str, Any]], Any]
    style: Callable[[Any], str | None] | None = None
    justify: Justify = "left"

    def cell(self, record: Mapping[str, Any]) -> Text:
        """The cell of ``record``: its value as literal text (never markup), styled."""
        value = self.value(record) if callable(self.value) else record.get(self.value)
        style = self.style(value) if self.style is not None else None
        return Text(_cell(value), style=style or "")


def print_records(
    columns: Sequence[Column], records: Iterable[Mapping[str, Any]], title: str | None = None
) -> None:
    """Print records (``to_dict()`` of library results) as a table of ``columns``."""
    print_table(
        [c.header for c in columns],
        ([c.cell(record) for c in columns] for record in records),
        title=title,
        justify={c.header: c.justify for c in columns},
    )


def print_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    title: str | None = None,
    justify: Mapping[str, str] | None = None,
) -> None:
    """Print a table: rich on a terminal, the same columns as plain aligned text otherwise.

    A cell is a value (``None`` shows as ``-``, floats with 4 significant digits), a
    rich ``Text``, or a string of rich markup (``"[red]failed[/]"``; plain text when
    piped). Columns are left-aligned unless ``justify`` says ``right``.
    """
    justify = justify or {}
    cells = [[_text(value) for value in row] for row in rows]
    if console.is_terminal:
        table = Table(title=title, title_justify="left", header_style="bold")
        for column in columns:
            table.add_column(column, justify=justify.get(column, "left"))  # type: ignore[arg-type]
        for styled in cells:
            table.add_row(*styled)
        console.print(table)
        return
    plain = [list(columns)] + [[" ".join(t.plain.splitlines()) for t in row] for row in cells]
    widths = [max(len(line[i]) for line in plain) for i in range(len(columns))]
    right = [justify.get(column) == "right" for column in columns]
    if title:
        click.echo(title)
    for row in plain:
        line = "  ".join(
            cell.rjust(width) if flush else cell.ljust(width)
            for cell, width, flush in zip(row, widths, right, strict=True)
        )
        click.echo(line.rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _text(value: Any) -> Text:
    if isinstance(value, Text):
        return value
    if isinstance(value, str):
        try:
            return Text.from_markup(value)
        except MarkupError:
            return Text(value)
    return Text(_cell(value))


class _RichTask:
    def __init__(self, reporter: RichReporter, task_id: TaskID) -> None:
        self._reporter = reporter
        self._task_id = task_id

    def advance(self, amount: int = 1) -> None:
        self._reporter.progress.advance(self._task_id, amount)

    def __enter__(self) -> _RichTask:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._reporter.close(self._task_id)


class RichReporter:
    """Progress bars on stderr; silent when stderr is not a terminal or ``quiet``."""

    def __init__(self, quiet: bool = False, min_total: int = 200) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=quiet or not err_console.is_terminal,
        )
        self.min_total = min_total
        self._open = 0

    def task(self, description: str, total: int | None = None) -> _RichTask:
        """Open a bar; small tasks (under ``min_total`` units) stay hidden."""
        visible = total is None or total >= self.min_total
        if self._open == 0:
            self.progress.start()
        self._open += 1
        task_id = self.progress.add_task(description, total=total, visible=visible)
        return _RichTask(self, task_id)

    def close(self, task_id: TaskID) -> None:
        """Remove a finished task, stopping the display after the last one."""
        self.progress.remove_task(task_id)
        self._open -= 1
        if self._open == 0:
            self.progress.stop()
