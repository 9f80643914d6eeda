"""Metric points read from a script's output lines, as Guild AI does.

A plain script that prints its metrics is recorded with no change at all: the
child process tees the script's stdout and stderr (file descriptors 1 and 2,
so C code and subprocesses count) to ``output.log`` and reads each line.

The built-in patterns (:data:`DEFAULT_PATTERNS`) find ``key: value`` and
``key=value`` pairs whose value is a number (``nan`` and ``inf`` too) that ends
the line or is followed by ``,``, ``;``, ``%``, a closing bracket, or a space
and then punctuation or another ``key:`` (so ``using: 0 TPU cores`` is not a
metric), and ``step N`` / ``epoch N`` (with or without ``:``/``=``;
``epoch 3/10`` too), which set the step of the line's points::

    loss: 0.12                      -> loss = 0.12
    acc=0.97 val_acc=0.95           -> two points
    epoch 3 loss: 0.12 acc: 0.97    -> loss and acc at step 3
    Accuracy: 9914/10000 (99%)      -> nothing (9914/10000 is not a number)
    took: 5 seconds                 -> nothing (a number followed by a word)

A line without a step key uses the last step a line gave, or, when no line has
given one yet, counts: the first line with values is step 0, the next step 1...
(the steps of ``mlbook.log`` are its own). A key the script logs itself with
``mlbook.log`` or ``run.log`` is not read from lines (no double points).

``[experiments] output_patterns`` replaces the built-in patterns with regular
expressions: each named group is a metric (``(?P<loss>\\S+)``), or the groups
``key`` and ``value`` name one; a group ``step`` sets the step. What does not
read as a number is ignored, never an error.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["DEFAULT_PATTERNS", "LineParser", "OutputTee", "pattern_problem"]

_NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|NaN|inf|Inf|infinity)"
#: ``key: value`` / ``key=value`` pairs, and ``step N`` / ``epoch N``.
DEFAULT_PATTERNS = (
    r"(?P<key>[A-Za-z_](?<![^\s,;(\[{|\"'][A-Za-z_])[\w.\-/]*+)[\"']?[ \t]*+[:=][ \t]*+"
    rf"(?P<value>{_NUMBER})"
    r"(?=\s*$|[,;%)\]}|]|\s++(?:[^\sA-Za-z_]|[A-Za-z_][\w.\-/]*+[\"']?[ \t]*+[:=]"
    r"|(?i:step|epoch)\b))",
    r"(?<![\w.])(?i:step|epoch)\b\s*[:=]?\s*(?P<step>\d+)(?=[\s,;/)\]}|]|$)",
)
_findall = re.compile(DEFAULT_PATTERNS[0]).findall
_STEP_AT = re.compile(r"(?:step|epoch)\b[ \t]*+[:=]?[ \t]*+(\d+)(?=[\s,;/)\]}|]|$)")
_STEP_WORDS = ("epoch", "step")
_STEP_KEYS = frozenset({"step", "epoch", "Step", "Epoch", "STEP", "EPOCH"})
#: a line longer than this (no newline for a long time: a progress bar) is not parsed
MAX_LINE = 8192
#: lines kept for a failed run's error
TAIL_LINES = 20


def _step_hint(line: str) -> bool:
    return "poch" in line or "tep" in line or "POCH" in line or "TEP" in line


def _bare_step(line: str) -> int | None:
    """The N of ``step N`` / ``epoch N`` (any case; not inside a word), or ``None``."""
    lower = line.lower()
    for word in _STEP_WORDS:
        index = lower.find(word)
        while index >= 0:
            before = lower[index - 1] if index else " "
            if not (before.isalnum() or before in "._"):
                found = _STEP_AT.match(lower, index)
                if found:
                    return int(found[1])
            index = lower.find(word, index + 1)
    return None


def pattern_problem(pattern: str) -> str:
    """Why ``pattern`` cannot be an output pattern, or ``""``."""
    try:
        compiled = re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"is not a valid regular expression ({exc})"
    groups = set(compiled.groupindex)
    if not groups - {"step"}:
        return (
            "has no named group: name the value, (?P<loss>\\S+), or use (?P<key>...)(?P<value>...)"
        )
    if ("key" in groups) != ("value" in groups):
        return "has only one of the groups key and value; use both"
    return ""


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


class LineParser:
    """Turns output lines into metric points: ``parse(line) -> (step, values)``.

    Args:
        patterns: regular expressions (see the module docstring); default: the
            built-in ones.
    """

    def __init__(self, patterns: Sequence[str] = ()) -> None:
        self.custom = [re.compile(p) for p in patterns]
        self.last_step: int | None = None
        self._count = 0

    def parse(self, line: str) -> tuple[int | None, dict[str, float]]:
        """The step and the metric values of one line (the step is set when values are)."""
        values: dict[str, float] = {}
        step: int | None = None
        if self.custom:
            step = self._custom(line, values)
        elif ":" in line or "=" in line:
            for key, text in _findall(line):
                if key in _STEP_KEYS:
                    value = float(text)  # the pattern only matches what float() reads
                    if value.is_integer():
                        step = int(value)
                else:
                    values[key] = float(text)
        if step is None and not self.custom and _step_hint(line):
            step = _bare_step(line)
        if step is not None:
            self.last_step = step
        elif values:
            if self.last_step is None:  # no line has given a step: count lines with values
                step = self._count
                self._count += 1
            else:
                step = self.last_step
        return step, values

    def _custom(self, line: str, values: dict[str, float]) -> int | None:
        step: int | None = None
        for pattern in self.custom:
            for match in pattern.finditer(line):
                groups = match.groupdict()
                text = groups.pop("step", None)
                if text is not None:
                    with contextlib.suppress(ValueError):
                        step = int(text)
                key, text = groups.pop("key", None), groups.pop("value", None)
                if key and text is not None and (value := _number(text)) is not None:
                    values[key] = value
                for name, text in groups.items():
                    if text is not None and (value := _number(text)) is not None:
                        values[name] = value
        return step


class OutputTee:
    """Copies this process's stdout and stderr to where they went, reading each line.

    :meth:`start` points file descriptors 1 and 2 at a pipe; a thread copies
    what arrives to the original stdout (``output.log``) and hands each complete
    line (``\\n`` or ``\\r``) to ``on_line``. :meth:`stop` points 1 and 2 back
    and waits (at most ``timeout`` seconds: a process the script started may
    still hold the pipe) until everything written before it was copied.
    :attr:`tail` holds the last lines, for a failed run's error.
    """

    def __init__(self, on_line: Callable[[str], Any] | None) -> None:
        self.on_line = on_line
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._saved: tuple[int, int] | None = None
        self._read_fd = -1
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Send fds 1 and 2 through the pipe (the original stdout keeps the output)."""
        read_fd, write_fd = os.pipe()
        self._saved = (os.dup(1), os.dup(2))
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._read_fd = read_fd
        self._thread = threading.Thread(target=self._copy, name="mlbook-output", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Restore fds 1 and 2 and wait until the pipe is drained."""
        if self._saved is None:
            return
        out, err = self._saved
        self._saved = None
        os.dup2(out, 1)  # closes the pipe's write end held by 1 and 2
        os.dup2(err, 2)
        os.close(err)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # a process the script started holds the pipe:
                return  # the thread may still write to `out`, so it stays open
        os.close(out)

    def _copy(self) -> None:
        assert self._saved is not None
        target = self._saved[0]
        pending = b""
        while True:
            try:
                data = os.read(self._read_fd, 1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            with contextlib.suppress(OSError):
                view = memoryview(data)
                while view:
                    view = view[os.write(target, view) :]
            if pending:
                data = pending + data
            end = max(data.rfind(b"\n"), data.rfind(b"\r"))
            if end < 0:  # no line end yet
                pending = data if len(data) <= MAX_LINE else b""  # a bar without end: dropped
                continue
            pending = data[end + 1 :]
            self._text(data[:end].decode("utf-8", "replace"))
        if pending:
            self._text(pending.decode("utf-8", "replace"))
        os.close(self._read_fd)

    def _text(self, text: str) -> None:
        lines = text.splitlines()
        self.tail.extend(line for line in lines[-TAIL_LINES:] if line.strip())
        on_line = self.on_line
        if on_line is None:
            return
        try:
            for line in lines:
                if line and len(line) <= MAX_LINE:
                    on_line(line)
        except Exception:  # reading metrics never breaks the run's output
            self.on_line = None
