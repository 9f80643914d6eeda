"""The filter box: ``acc>0.9 params.opt='sgd w/ momentum' status=completed``.

The text is split on spaces (quotes keep a value with spaces together) and each
part is checked by :func:`mlbook.experiments.query.parse_filter`, the grammar of
``mlbook runs``. A mistake becomes a :class:`FilterError` carrying the column
where the faulty part starts, so the page can point at it.
"""

from __future__ import annotations

from mlbook.errors import ExperimentError
from mlbook.experiments.query import parse_filter

__all__ = ["FilterError", "join_filters", "split_filters"]


class FilterError(ExperimentError):
    """A filter expression in the box is wrong; ``column`` is 1-based, ``length`` its extent."""

    def __init__(self, text: str, column: int, length: int, problem: str) -> None:
        self.text = text
        self.column = column
        self.length = max(length, 1)
        self.problem = problem
        super().__init__(f"filter, column {column}: {problem}")


def split_filters(text: str) -> list[str]:
    """The expressions in ``text``, each checked.

    Raises:
        FilterError: an unclosed quote or an expression that is not NAME OP VALUE.
    """
    expressions: list[str] = []
    index = 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        start = index
        quote = ""
        while index < len(text) and (quote or not text[index].isspace()):
            char = text[index]
            if quote and char == quote:
                quote = ""
            elif not quote and char in "'\"":
                quote = char
                opened = index
            index += 1
        if quote:
            raise FilterError(
                text, opened + 1, len(text) - opened, f"the quote {quote} is never closed"
            )
        part = text[start:index]
        try:
            parse_filter(part)
        except ExperimentError as exc:
            raise FilterError(text, start + 1, len(part), str(exc)) from exc
        expressions.append(part)
    return expressions


def join_filters(expressions: list[str]) -> str:
    """Expressions back into one filter text (the box's value)."""
    return " ".join(expressions)
