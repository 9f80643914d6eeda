"""Progress reporting, library side.

Library code that does long work takes an optional :class:`Reporter` and opens
tasks on it; the default :class:`NullReporter` does nothing. The CLI passes a
rich-backed reporter (``mlbook.cli._render.RichReporter``), so the library never
imports rich.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

__all__ = ["NullReporter", "NullTask", "ProgressTask", "Reporter"]


class ProgressTask(Protocol):
    """One piece of long work; a context manager that closes the task."""

    def advance(self, amount: int = 1) -> None:
        """Mark ``amount`` more units done."""

    def __enter__(self) -> ProgressTask: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Reporter(Protocol):
    """Something that shows progress: opens tasks and prints short messages."""

    def task(self, description: str, total: int | None = None) -> ProgressTask:
        """Open a task of ``total`` units (``None``: unknown)."""
        ...


class NullTask:
    """A task that shows nothing."""

    def advance(self, amount: int = 1) -> None:
        """Do nothing."""

    def __enter__(self) -> NullTask:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class NullReporter:
    """The default reporter: shows nothing."""

    def task(self, description: str, total: int | None = None) -> NullTask:
        """Return a task that shows nothing."""
        return NullTask()
