"""The experiment journal, ``EXPERIMENT_LOG.md``: written by people, updated by mlbook.

An entry looks like this (``add_entry`` writes it)::

    ## [E012] Wider CNN on digits
    <!-- mlbook:status E012 -->
    Status: IN PROGRESS · created 2026-11-24
    <!-- /mlbook:status -->
    What the experiment tries, and why.

    ### Steps
    <!-- mlbook:steps E012 -->
    1. [x] small — run 20261124-1616-ab12 · acc 0.962 · 83d45cd → 9af01b2
    <!-- /mlbook:steps -->

    ### Conclusions
    What was learnt; what to try next.

    ### Notes
    <!-- mlbook:notes E012 -->
    - 2026-11-25 (83d45cd): wider is not better past 64 channels
    <!-- /mlbook:notes -->

mlbook owns only the lines between its ``<!-- mlbook:KIND ID -->`` and
``<!-- /mlbook:KIND -->`` markers (the HTML comments do not show on GitHub);
every other byte is kept as it was. One exception, on request: the text under an
entry's ``### Conclusions`` heading is replaced by :func:`set_conclusions` (the
UI's editor), which refuses when that text changed since the editor read it.
A block missing from an entry is inserted (status after the heading, steps
before ``### Conclusions``, notes at the end).
A broken marker raises :class:`ProvenanceError` naming the line, and the file
is not written. Every write is atomic and serialised by an ``fcntl.flock`` on a
lock file, so two processes updating the journal at once lose nothing.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from mlbook._fs import atomic_write_text
from mlbook.errors import ProvenanceError

__all__ = [
    "STATUSES",
    "Entry",
    "Step",
    "add_entry",
    "add_note",
    "best_metric",
    "digest",
    "read_journal",
    "record_step",
    "record_steps",
    "set_conclusions",
    "set_status",
]

STATUSES = ("TODO", "IN PROGRESS", "DONE")
_KINDS = ("status", "steps", "notes")
_HEADING = re.compile(r"^## \[(?P<id>[^\]\s]+)\][ \t]*(?P<title>.*?)[ \t]*$")
_OPEN = re.compile(r"^<!-- mlbook:(?P<kind>[a-z]+) (?P<id>\S+) -->[ \t]*$")
_CLOSE = re.compile(r"^<!-- /mlbook:(?P<kind>[a-z]+) -->[ \t]*$")
_MARKERISH = re.compile(r"^<!--\s*/?\s*mlbook\s*:")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_STATUS_LINE = re.compile(
    r"^Status: (?P<status>.+?)(?: · created (?P<created>\d{4}-\d{2}-\d{2}))?[ \t]*$"
)
_STEP = re.compile(
    r"^(?P<n>\d+)\. \[(?P<mark>[ xX])\] (?P<version>.+?) — run (?P<run>\S+)(?P<rest>.*)$"
)
_COMMITS = re.compile(r"^(?P<before>[0-9a-f]{4,40}|\?) → (?P<after>[0-9a-f]{4,40}|\?)$")
_METRIC = re.compile(r"^(?P<key>\S+) (?P<value>[-+0-9.eEinfa]+)$")
_CONCLUSIONS = re.compile(r"^#{2,6} +Conclusions\b", re.IGNORECASE)
_STEPS = re.compile(r"^#{2,6} +Steps\b", re.IGNORECASE)
_SECTION_END = re.compile(r"^#{1,3} ")  # a heading of level 1-3 ends the conclusions
_Change = Callable[[list[str], list["_EntrySpan"], Path], "list[str] | None"]


@dataclass(frozen=True)
class Step:
    """One step line: a run of a version."""

    number: int
    version: str
    run_id: str
    done: bool
    status: str  # "done", or the run's status ("running", "failed", ...)
    metrics: dict[str, float] = field(default_factory=dict)
    before: str | None = None
    after: str | None = None


@dataclass(frozen=True)
class Entry:
    """One experiment in the journal."""

    id: str
    title: str
    status: str  # TODO / IN PROGRESS / DONE, or what a person wrote
    created: str | None
    line: int  # 1-based line of the heading
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    conclusions: str = ""  # the text under "### Conclusions", as written

    def to_dict(self) -> dict[str, Any]:
        """A plain dict, steps included (for JSON output and tables)."""
        return asdict(self)


# ---------------------------------------------------------------- parsing


@dataclass
class _Block:
    kind: str
    start: int  # index of the open marker line
    end: int  # index of the close marker line


@dataclass
class _EntrySpan:
    id: str
    title: str
    start: int  # index of the heading line
    end: int  # index one past the entry's last line
    blocks: dict[str, _Block] = field(default_factory=dict)


def _lines(text: str) -> list[str]:
    """Split keeping line ends; only ``\\n`` ends a line (a ``\\r`` stays with it)."""
    return re.findall(r"[^\n]*\n|[^\n]+", text)


def _body(line: str) -> str:
    return line.rstrip("\r\n")


def _parse(lines: list[str], path: Path) -> list[_EntrySpan]:
    def fail(index: int, problem: str) -> ProvenanceError:
        return ProvenanceError(f"{path}:{index + 1}: {problem}; fix or delete that line")

    entries: list[_EntrySpan] = []
    open_block: _Block | None = None
    in_fence = False
    for index, raw in enumerate(lines):
        line = _body(raw)
        if open_block is None and _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        heading = _HEADING.match(line)
        opened, closed = _OPEN.match(line), _CLOSE.match(line)
        if open_block is not None:
            if closed and closed["kind"] == open_block.kind:
                open_block.end = index
                entries[-1].blocks[open_block.kind] = open_block
                open_block = None
            elif heading or opened or closed or _MARKERISH.match(line):
                start = open_block.start
                raise fail(
                    start,
                    f"mlbook block '{_body(lines[start])}' is not closed before line {index + 1}"
                    f" (expected '<!-- /mlbook:{open_block.kind} -->')",
                )
            continue
        if heading:
            if entries:
                entries[-1].end = index
            entries.append(_EntrySpan(heading["id"], heading["title"], index, len(lines)))
            continue
        if opened:
            kind, exp_id = opened["kind"], opened["id"]
            if kind not in _KINDS:
                raise fail(index, f"unknown mlbook block '{kind}' (expected one of {_KINDS})")
            if not entries:
                raise fail(index, f"mlbook block '{line}' is outside any '## [ID] title' entry")
            if exp_id != entries[-1].id:
                raise fail(
                    index,
                    f"mlbook block for {exp_id} inside the entry of {entries[-1].id} "
                    f"(line {entries[-1].start + 1})",
                )
            if kind in entries[-1].blocks:
                raise fail(index, f"second mlbook:{kind} block in the entry of {exp_id}")
            open_block = _Block(kind, index, -1)
            continue
        if closed:
            raise fail(index, f"'{line}' closes a block that was never opened")
        if _MARKERISH.match(line):
            raise fail(
                index,
                f"broken mlbook marker '{line}' (expected '<!-- mlbook:KIND ID -->' "
                "or '<!-- /mlbook:KIND -->')",
            )
    if open_block is not None:
        raise fail(
            open_block.start, f"mlbook block '{_body(lines[open_block.start])}' is never closed"
        )
    seen: dict[str, int] = {}
    for entry in entries:
        if entry.id in seen:
            raise fail(
                entry.start,
                f"second entry for {entry.id} (the first is at line {seen[entry.id] + 1})",
            )
        seen[entry.id] = entry.start
    return entries


def _block_lines(lines: list[str], block: _Block | None) -> list[str]:
    return [] if block is None else [_body(x) for x in lines[block.start + 1 : block.end]]


def _parse_step(line: str) -> Step | None:
    found = _STEP.match(line)
    if not found:
        return None
    metrics: dict[str, float] = {}
    status = "done" if found["mark"] in "xX" else "running"
    before = after = None
    for part in (p.strip() for p in found["rest"].split(" · ")):
        if not part:
            continue
        commits, metric = _COMMITS.match(part), _METRIC.match(part)
        if commits:
            before = None if commits["before"] == "?" else commits["before"]
            after = None if commits["after"] == "?" else commits["after"]
        elif metric:
            with contextlib.suppress(ValueError):
                metrics[metric["key"]] = float(metric["value"])
        elif " " not in part:
            status = part
    return Step(
        number=int(found["n"]),
        version=found["version"],
        run_id=found["run"],
        done=found["mark"] in "xX",
        status=status,
        metrics=metrics,
        before=before,
        after=after,
    )


def _to_entry(lines: list[str], span: _EntrySpan) -> Entry:
    status, created = "TODO", None
    for line in _block_lines(lines, span.blocks.get("status")):
        found = _STATUS_LINE.match(line)
        if found:
            status, created = found["status"], found["created"]
    steps = [s for s in map(_parse_step, _block_lines(lines, span.blocks.get("steps"))) if s]
    notes = [
        line[2:] for line in _block_lines(lines, span.blocks.get("notes")) if line.startswith("- ")
    ]
    section = _conclusions_span(lines, span)
    conclusions = "" if section is None else "".join(lines[section[0] : section[1]]).strip("\r\n")
    return Entry(span.id, span.title, status, created, span.start + 1, steps, notes, conclusions)


def _conclusions_span(lines: list[str], span: _EntrySpan) -> tuple[int, int] | None:
    """Line indexes ``[start, end)`` of the text under the entry's Conclusions heading.

    The text ends at the next heading of level 1-3, at an mlbook block, or at the
    end of the entry (blank lines before those stay outside).
    """
    heading = next(
        (i for i in range(span.start + 1, span.end) if _CONCLUSIONS.match(_body(lines[i]))), None
    )
    if heading is None:
        return None
    end = heading + 1
    while end < span.end:
        line = _body(lines[end])
        if _SECTION_END.match(line) or _OPEN.match(line) or _MARKERISH.match(line):
            break
        end += 1
    while end > heading + 1 and not _body(lines[end - 1]).strip():
        end -= 1
    return heading + 1, end


# ---------------------------------------------------------------- rendering


def _status_block(exp_id: str, status: str, created: str | None) -> list[str]:
    tail = f" · created {created}" if created else ""
    return [
        f"<!-- mlbook:status {exp_id} -->\n",
        f"Status: {status}{tail}\n",
        "<!-- /mlbook:status -->\n",
    ]


def _format_number(value: float) -> str:
    return f"{value:.4g}"


def _step_line(
    number: int,
    version: str,
    run_id: str,
    status: str,
    metrics: Mapping[str, float],
    before: str | None,
    after: str | None,
) -> str:
    done = status == "done"
    parts = [f"{number}. [{'x' if done else ' '}] {version} — run {run_id}"]
    if not done:
        parts.append(status)
    parts.extend(f"{key} {_format_number(value)}" for key, value in metrics.items())
    if before or after:
        parts.append(f"{(before or '?')[:7]} → {(after or '?')[:7]}")
    return " · ".join(parts) + "\n"


def _today() -> str:
    return _dt.date.today().isoformat()


# ---------------------------------------------------------------- locking and writing


def _lock_path(path: Path) -> Path:
    """``.mlbook/journal.lock`` in a project (git-ignored), else a hidden sidecar file."""
    if (path.parent / "mlbook.toml").is_file():
        state = path.parent / ".mlbook"
        state.mkdir(exist_ok=True)
        return state / "journal.lock"
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = _lock_path(path)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError as exc:
        raise ProvenanceError(f"{path}: not UTF-8 text ({exc.reason}); fix the encoding") from exc
    except OSError as exc:
        raise ProvenanceError(f"cannot read {path}: {exc.strerror}") from exc


def _update(path: Path | str, change: _Change) -> None:
    """Read, parse, change and atomically write the journal under the lock."""
    target = Path(path)
    with _locked(target):
        text = _read(target)
        lines = _lines(text)
        new = change(lines, _parse(lines, target), target)
        if new is None:
            return
        out = "".join(new)
        if out != text:
            try:
                atomic_write_text(target, out)
            except OSError as exc:
                raise ProvenanceError(f"cannot write {target}: {exc.strerror}") from exc


def _find(entries: list[_EntrySpan], exp_id: str, path: Path) -> _EntrySpan:
    for entry in entries:
        if entry.id == exp_id:
            return entry
    raise ProvenanceError(
        f"{path}: no entry for {exp_id}; create it with `mlbook new {exp_id} TITLE`"
    )


def _insert(lines: list[str], at: int, new: list[str]) -> list[str]:
    before = lines[:at]
    if before and not before[-1].endswith("\n"):
        before[-1] += "\n"  # the file ended without a newline: start on a new line
    return [*before, *new, *lines[at:]]


def _replace_block(lines: list[str], span: _EntrySpan, kind: str, body: list[str]) -> list[str]:
    """Replace the body of block ``kind`` in ``span``, or insert the block where it belongs.

    A new status block goes right after the heading; a new steps block after a
    ``Steps`` heading, else before ``Conclusions`` (with a heading), else at the end
    of the entry; a new notes block at the end of the entry under ``### Notes``.
    """
    block = span.blocks.get(kind)
    if block is not None:
        return [*lines[: block.start + 1], *body, *lines[block.end :]]
    new = [f"<!-- mlbook:{kind} {span.id} -->\n", *body, f"<!-- /mlbook:{kind} -->\n"]
    inside = range(span.start + 1, span.end)
    if kind == "status":
        return _insert(lines, span.start + 1, new)
    if kind == "steps":
        heading = next((i for i in inside if _STEPS.match(_body(lines[i]))), None)
        if heading is not None:
            return _insert(lines, heading + 1, new)
        conclusions = next((i for i in inside if _CONCLUSIONS.match(_body(lines[i]))), None)
        if conclusions is not None:
            return _insert(lines, conclusions, ["### Steps\n", *new, "\n"])
    title = "### Steps\n" if kind == "steps" else "### Notes\n"
    return _insert(lines, _entry_end(lines, span), ["\n", title, *new])


def _entry_end(lines: list[str], span: _EntrySpan) -> int:
    """Insert point at the end of an entry: before the blank lines that separate it."""
    end = span.end
    while end > span.start + 1 and not _body(lines[end - 1]).strip():
        end -= 1
    return end


# ---------------------------------------------------------------- public API


def read_journal(path: Path | str) -> list[Entry]:
    """Parse the journal into its entries (an empty list when the file is missing).

    Raises:
        ProvenanceError: a broken marker (naming the line); an unreadable file.
    """
    target = Path(path)
    lines = _lines(_read(target))
    return [_to_entry(lines, span) for span in _parse(lines, target)]


def add_entry(path: Path | str, exp_id: str, title: str, description: str = "") -> bool:
    """Append the entry ``## [exp_id] title`` (status TODO, today's date).

    Returns:
        ``True`` when written, ``False`` when the entry already exists (left as it is).

    Raises:
        ProvenanceError: a broken journal; an ID with spaces or brackets.
    """
    if not exp_id or any(c in exp_id for c in " \t\n[]"):
        raise ProvenanceError(f"experiment id {exp_id!r} must be one word without brackets")
    title = " ".join(title.split())
    added = False

    def change(lines: list[str], entries: list[_EntrySpan], target: Path) -> list[str] | None:
        nonlocal added
        if any(e.id == exp_id for e in entries):
            return None
        added = True
        text = [f"## [{exp_id}] {title}".rstrip() + "\n", *_status_block(exp_id, "TODO", _today())]
        if description.strip():
            text.extend(line + "\n" for line in description.strip("\n").split("\n"))
        text += [
            "\n",
            "### Steps\n",
            f"<!-- mlbook:steps {exp_id} -->\n",
            "<!-- /mlbook:steps -->\n",
            "\n",
            "### Conclusions\n",
            "\n",
        ]
        blank_end = not lines or not _body(lines[-1]).strip()
        return _insert(lines, len(lines), text if blank_end else ["\n", *text])

    _update(path, change)
    return added


def set_status(path: Path | str, exp_id: str, status: str) -> str:
    """Set an entry's status to TODO, IN PROGRESS or DONE (any case, ``-``/``_`` for space).

    Returns:
        the status written.

    Raises:
        ProvenanceError: an unknown status or entry; a broken journal.
    """
    word = " ".join(status.replace("-", " ").replace("_", " ").upper().split())
    if word not in STATUSES:
        raise ProvenanceError(
            f"unknown status {status!r}; use one of: "
            + ", ".join(s.lower().replace(" ", "-") for s in STATUSES)
        )

    def change(lines: list[str], entries: list[_EntrySpan], target: Path) -> list[str] | None:
        span = _find(entries, exp_id, target)
        created = _to_entry(lines, span).created
        body = _status_block(exp_id, word, created)[1:2]
        return _replace_block(lines, span, "status", body)

    _update(path, change)
    return word


def record_step(
    path: Path | str,
    exp_id: str,
    version: str,
    run_id: str,
    status: str,
    metrics: Mapping[str, float],
    before: str | None,
    after: str | None,
    title: str = "",
) -> None:
    """Add the step line of ``run_id``, or update it in place when it is there.

    The line reads ``1. [x] small — run 20261124-1616-ab12 · acc 0.962 · 83d45cd → 9af01b2``;
    a status other than ``done`` shows after the run id and leaves the box empty.
    The entry is created when missing, with ``title`` (the script's
    ``Experiment(title=...)``); an entry whose heading has no title gets it; a
    TODO entry becomes IN PROGRESS.

    Raises:
        ProvenanceError: a broken journal.
    """
    step = Step(0, version, run_id, status == "done", status, dict(metrics), before, after)
    record_steps(path, exp_id, [step], title)


def record_steps(path: Path | str, exp_id: str, steps: Sequence[Step], title: str = "") -> None:
    """Add or update the step lines of several runs of one experiment in one write.

    Each step is written as :func:`record_step` writes one; a step's ``number`` and
    ``done`` are not used (a line keeps its number, a new one follows the last,
    and ``status == "done"`` ticks the box). ``title`` names a missing or untitled
    entry, as in :func:`record_step`.

    Raises:
        ProvenanceError: a broken journal.
    """

    def change(lines: list[str], entries: list[_EntrySpan], target: Path) -> list[str] | None:
        span = next((e for e in entries if e.id == exp_id), None)
        if span is None:
            return None
        block = span.blocks.get("steps")
        body = [] if block is None else lines[block.start + 1 : block.end]
        parsed = [_parse_step(_body(line)) for line in body]
        numbers: dict[str, tuple[int, int]] = {}  # run id -> (index in body, number)
        for index, old in enumerate(parsed):
            if old is not None:
                numbers.setdefault(old.run_id, (index, old.number))
        last = max((old.number for old in parsed if old), default=0)
        for step in steps:
            line = partial(
                _step_line,
                version=step.version,
                run_id=step.run_id,
                status=step.status,
                metrics=step.metrics,
                before=step.before,
                after=step.after,
            )
            if step.run_id in numbers:
                index, number = numbers[step.run_id]
                body[index] = line(number)
            else:
                last += 1
                numbers[step.run_id] = (len(body), last)
                body.append(line(last))
        new = _replace_block(lines, span, "steps", body)
        clean_title = " ".join(title.split())
        if clean_title and not span.title:  # a heading mlbook made untitled: name it
            heading = new[span.start]
            ending = heading[len(_body(heading)) :] or "\n"
            new[span.start] = f"## [{exp_id}] {clean_title}{ending}"
        entry = _to_entry(lines, span)
        if entry.status == "TODO":
            span = _find(_parse(new, target), exp_id, target)
            status_line = _status_block(exp_id, "IN PROGRESS", entry.created)[1:2]
            new = _replace_block(new, span, "status", status_line)
        return new

    if not steps:
        return
    target = Path(path)
    if not any(e.id == exp_id for e in read_journal(target)):
        add_entry(target, exp_id, title)
    _update(target, change)


def add_note(path: Path | str, exp_id: str, text: str, commit: str | None) -> str:
    """Append a dated note ``- 2026-11-25 (83d45cd): text`` to the entry's notes block.

    Returns:
        the note line written (without the ``- ``).

    Raises:
        ProvenanceError: an unknown entry, empty text or a broken journal.
    """
    words = " ".join(text.split())
    if not words:
        raise ProvenanceError("the note is empty; write some text")
    note = f"{_today()} ({commit[:7]}): {words}" if commit else f"{_today()}: {words}"

    def change(lines: list[str], entries: list[_EntrySpan], target: Path) -> list[str] | None:
        span = _find(entries, exp_id, target)
        block = span.blocks.get("notes")
        body = [] if block is None else lines[block.start + 1 : block.end]
        return _replace_block(lines, span, "notes", [*body, f"- {note}\n"])

    _update(path, change)
    return note


def digest(text: str) -> str:
    """A short hash of a text (what an editor sends back with :func:`set_conclusions`)."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _check_conclusions(exp_id: str, text: str) -> list[str]:
    """The lines of new conclusions; refuse lines that would break the entry's structure."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n").split("\n")
    fences = 0
    for number, line in enumerate(lines, 1):
        if _SECTION_END.match(line) or _HEADING.match(line):
            raise ProvenanceError(
                f"conclusions of {exp_id}, line {number}: the heading {line[:40]!r} would end "
                "the conclusions; use #### or plain text"
            )
        if _MARKERISH.match(line):
            raise ProvenanceError(
                f"conclusions of {exp_id}, line {number}: mlbook markers are not allowed here"
            )
        fences += bool(_FENCE.match(line))
    if fences % 2:
        raise ProvenanceError(
            f"conclusions of {exp_id}: a code fence (``` or ~~~) is not closed; close it"
        )
    return [] if lines == [""] else lines


def set_conclusions(
    path: Path | str, exp_id: str, text: str, *, based_on: str | None = None
) -> str:
    """Replace the text under the entry's ``### Conclusions`` heading (added when missing).

    Everything else in the file is kept byte for byte.

    Args:
        path: the journal.
        exp_id: the experiment.
        text: the new conclusions (Markdown; ``\r\n`` becomes ``\n``).
        based_on: :func:`digest` of the conclusions the edit started from; when the
            text on disk differs, nothing is written (someone changed it meanwhile).

    Returns:
        the conclusions as written (what :func:`read_journal` reads back).

    Raises:
        ProvenanceError: an unknown entry; a concurrent change (``based_on``); a text
            with a heading of level 1-3, an mlbook marker or an open code fence; a
            broken journal.
    """
    new_lines = _check_conclusions(exp_id, text)

    def change(lines: list[str], entries: list[_EntrySpan], target: Path) -> list[str] | None:
        span = _find(entries, exp_id, target)
        current = _to_entry(lines, span).conclusions
        if based_on is not None and digest(current) != based_on:
            raise ProvenanceError(
                f"{target}: the conclusions of {exp_id} changed on disk since they were opened;"
                " reload to see the new text, then apply your edit again (nothing was written)"
            )
        body = [line + "\n" for line in new_lines]
        section = _conclusions_span(lines, span)
        if section is not None:
            start, end = section
            if end < len(lines) and body and _body(lines[end]).strip():
                body.append("\n")  # keep a blank line before what follows
            return [*lines[:start], *body, *lines[end:]]
        notes = span.blocks.get("notes")
        at = _entry_end(lines, span)
        if notes is not None:  # before the notes (and their heading, when there is one)
            at = notes.start
            if at > span.start + 1 and _body(lines[at - 1]).lower().startswith("### notes"):
                at -= 1
            return _insert(lines, at, ["### Conclusions\n", *body, "\n"])
        return _insert(lines, at, ["\n", "### Conclusions\n", *body])

    _update(path, change)
    return "\n".join(new_lines)


def best_metric(entry: Entry) -> tuple[str, float, str] | None:
    """The best value of the entry's first metric over its steps: ``(key, value, run_id)``.

    Lower is better for keys containing ``loss`` or ``err``; higher otherwise.
    """
    key = next((k for s in entry.steps for k in s.metrics), None)
    if key is None:
        return None
    lower = "loss" in key.lower() or "err" in key.lower()
    pairs = [(s.metrics[key], s.run_id) for s in entry.steps if key in s.metrics]
    value, run_id = min(pairs) if lower else max(pairs)
    return key, value, run_id
