"""Options shared by several commands, defined once so they are spelled the same."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["format_option", "quiet_option"]

F = TypeVar("F", bound=Callable[..., Any])


def format_option(*choices: str) -> Callable[[F], F]:
    """``--format`` with ``text`` first (the default) and the given machine formats."""
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["text", *choices]),
        default="text",
        show_default=True,
        help="Output format.",
    )


def quiet_option(func: F) -> F:
    """``--quiet/-q``: no progress bars, only results and errors."""
    return click.option("--quiet", "-q", is_flag=True, help="No progress output.")(func)
