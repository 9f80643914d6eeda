"""Terminal output: the only module that imports rich.

Commands build library results and hand them here to print: tables, coloured
status words, JSON, and a rich progress reporter that plugs into
:class:`mlbook.progress.Reporter`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import orjson
from rich.console import Console
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

__all__ = [
    "RichReporter",
    "console",
    "err_console",
    "print_json",
    "print_table",
]

# Piped output (files, pagers, other tools) gets room for whole run ids instead of
# rich's 80-column default; a terminal or COLUMNS decides otherwise.
_PIPE_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200
console = Console(highlight=False, soft_wrap=True, width=_PIPE_WIDTH)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (no colour, for tools)."""
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def print_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    title: str | None = None,
    justify: dict[str, str] | None = None,
) -> None:
    """Print a rich table; numbers are right-aligned unless ``justify`` says otherwise."""
    table = Table(title=title, title_justify="left", header_style="bold")
    justify = justify or {}
    for column in columns:
        table.add_column(column, justify=justify.get(column, "left"))  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


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
