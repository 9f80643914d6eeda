"""The run this process is part of, and the module-level functions that use it.

``mlbook.log``, ``mlbook.log_params``, ``mlbook.artifact``, ``mlbook.iterate`` and
``mlbook.current_run`` work from anywhere in a script: inside a run (the
runner's child process made this process part of one) they go to its
:class:`~mlbook.experiments.run.Run` and over the same buffered pipe as
``run.log``; in a plain ``python script.py`` they do nothing and return at once.
This module imports nothing but the standard library, so the first
``mlbook.log`` costs no heavy import.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from mlbook.experiments.metrics import Outbox
    from mlbook.experiments.run import Run

__all__ = ["activate", "artifact", "current_run", "iterate", "log", "log_params"]

T = TypeVar("T")

_run: Run | None = None
_outbox: Outbox | None = None


def activate(run: Run | None) -> None:
    """Make ``run`` the current run of this process (``None``: no run)."""
    global _run, _outbox
    _run = run
    _outbox = None if run is None else run._outbox


def current_run() -> Run | None:
    """The :class:`~mlbook.experiments.run.Run` this process is part of, or ``None``.

    Inside a run it has the params, the output directory (``.dir``), the mode
    (``.is_test``) and every method a hook's ``run`` has.
    """
    return _run


def log(step: int | None = None, **metrics: Any) -> None:
    """Record metric values at ``step`` (default: the previous step + 1), like ``run.log``.

    Outside a run: nothing. A value that is not a number is dropped with one
    warning naming the key; NaN and ±inf are kept.
    """
    if _outbox is not None:
        _outbox.log(step, metrics)


def log_params(**params: Any) -> None:
    """Add ``params`` to the run's params (shown by ``mlbook show``, filtered by ``mlbook runs``).

    Values are kept as JSON (numbers, strings, booleans, ``None``, lists and
    dicts of them); anything else is stored as its ``str()``. Outside a run: nothing.
    """
    if _run is not None:
        _run.log_params(**params)


def artifact(path: Path | str, kind: str = "file") -> Path:
    """Record a file the run wrote (a relative path is inside the run's directory).

    Outside a run: nothing; returns ``path``.
    """
    if _run is None:
        return Path(path)
    return _run.artifact(path, kind)


def iterate(iterable: Iterable[T], total: int | None = None) -> Iterable[T]:
    """Loop over ``iterable``; in test mode the loop stops after a few steps, nested loops too.

    Outside a run: ``iterable`` itself.
    """
    if _run is None:
        return iterable
    return _run.iterate(iterable, total)
