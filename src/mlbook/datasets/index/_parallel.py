"""The two-process index build: the messages, and the builder's end of it.

A large ``records.jsonl`` is indexed by two processes (the GIL makes threads slower):
the builder (:mod:`._build`) indexes the first part of the file into the index being
built, and a worker (:mod:`._worker`, ``python -P -m mlbook.datasets.index._worker``)
indexes the rest into a scratch SQLite file of the same schema. They talk through
length-prefixed msgpack frames on the worker's stdin and stdout::

    builder                                       worker
    (first block read: summary columns chosen)
    Start(paths, byte range, columns, labels) --> index [start, end) into the scratch file
                                              <-- Progress(bytes done), one per block
                                              <-- Done(records, boxes) | Failed(message)
    ATTACH the scratch file, copy its rows with shifted ids, labels remapped by name
    close stdin                               --> end of file: delete the scratch file, exit

The worker's end of file on stdin is also how it notices a killed builder: it deletes
its scratch file and exits, and no index takes the final name. A worker that stops
without ``Done`` or ``Failed`` fails the build with one line (:class:`DatasetError`).
A bad record in the worker's part is sent back with its line counted from the start
of the part; the builder adds its own line count, so the error reads as in a
one-process build.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import IO

import msgspec

from mlbook._frames import FrameReader, Frames
from mlbook.datasets.index._rows import SUMMARY_COLUMNS, Loader
from mlbook.errors import DatasetError
from mlbook.progress import ProgressTask

__all__ = [
    "Done",
    "Failed",
    "Message",
    "Progress",
    "Start",
    "Worker",
    "frame",
    "merge",
    "read",
]


class Start(msgspec.Struct, tag=True):
    """Builder -> worker: index bytes ``[start, end)`` of ``records`` into ``scratch``.

    ``columns`` are the summary columns' labels (chosen by the builder from the first
    records); ``labels`` the builder's labels so far, in id order, so that most
    labels get the same id in both processes.
    """

    records: str
    scratch: str
    start: int
    end: int
    columns: list[str]
    labels: list[str]


class Progress(msgspec.Struct, tag=True):
    """Worker -> builder: ``done`` bytes of its range are indexed."""

    done: int


class Done(msgspec.Struct, tag=True):
    """Worker -> builder: the scratch file is complete (committed and closed)."""

    records: int
    boxes: int


class Failed(msgspec.Struct, tag=True):
    """Worker -> builder: the worker's part cannot be indexed.

    A bad record keeps its fields (``line`` counted from the start of the part);
    ``bug`` marks an unexpected exception (its traceback went to stderr).
    """

    message: str
    line: int | None = None
    field: str = ""
    problem: str = ""
    record: bool = False
    bug: bool = False


Message = Start | Progress | Done | Failed

_FRAMES: Frames[Message] = Frames(Message)


def frame(message: Message) -> bytes:
    """One message as a length-prefixed msgpack frame (:mod:`mlbook._frames`)."""
    return _FRAMES.encode(message)


def read(stream: IO[bytes]) -> Message | None:
    """The next message on a blocking ``stream`` (``None`` at its end)."""
    return _FRAMES.read(stream)


class Worker:
    """The builder's handle on a worker process: start it, send it its part, follow
    its progress, and stop it (always; :meth:`stop` in a ``finally``).

    Args:
        records: the records file (for error messages).
    """

    def __init__(self, records: Path) -> None:
        self.records = records
        env = dict(os.environ)
        home = str(Path(__file__).resolve().parents[3])  # this mlbook, for the worker too
        env["PYTHONPATH"] = os.pathsep.join(p for p in (home, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", "mlbook.datasets.index._worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.process.stdout is not None
        self._fd = self.process.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._reader = FrameReader(_FRAMES)
        self._done = 0
        self._reported = 0
        self.answer: Done | Failed | None = None

    def begin(self, start: Start) -> None:
        """Send the worker its part."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(frame(start))
            self.process.stdin.flush()
        except BrokenPipeError:
            raise self._gone() from None

    def poll(self) -> int:
        """Bytes the worker indexed since the last call (never blocks).

        Raises:
            DatasetError: the worker stopped without an answer (killed, say).
        """
        while self.answer is None:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                break
            if not data:
                raise self._gone()
            self._feed(data)
        return self._advance()

    def wait(self, task: ProgressTask) -> Done | Failed:
        """Follow the worker's progress on ``task`` until it answers.

        Raises:
            DatasetError: the worker stopped without an answer.
        """
        while self.answer is None:
            select.select([self._fd], [], [])
            task.advance(self.poll())
        task.advance(self._advance())
        return self.answer

    def stop(self) -> None:
        """Close the worker's stdin (it deletes its scratch file and exits) and reap
        it; kill it when it does not exit at once."""
        assert self.process.stdin is not None and self.process.stdout is not None
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()

    def kill(self) -> None:
        """Stop the worker now (the build failed)."""
        with contextlib.suppress(OSError):
            self.process.kill()
        self.stop()

    def _advance(self) -> int:
        step = self._done - self._reported
        self._reported = self._done
        return step

    def _feed(self, data: bytes) -> None:
        for message in self._reader.feed(data):
            if isinstance(message, Progress):
                self._done = message.done
            elif isinstance(message, Done | Failed):
                self.answer = message

    def _gone(self) -> DatasetError:
        code = self.process.wait()
        if code < 0:
            how = f"was killed ({signal.Signals(-code).name})"
        else:
            how = f"exited with code {code}"
        return DatasetError(
            f"{self.records}: the index worker (pid {self.process.pid}) {how} before it "
            "finished; no index was kept, build it again"
        )


def merge(db: sqlite3.Connection, loader: Loader, scratch: Path, done: Done) -> None:
    """Copy the worker's rows from ``scratch`` into the index after the builder's:
    record and box ids shifted by the builder's counts, labels mapped by name (labels
    new to the builder are added, totals summed)."""
    db.execute("ATTACH DATABASE ? AS w", (str(scratch),))
    mapping: list[tuple[int, int]] = []
    for lid, name, records, boxes in db.execute(
        "SELECT lid, name, records, boxes FROM w.labels ORDER BY lid"
    ):
        mine = loader.lid(name)
        loader.label_records[mine] += records
        loader.label_boxes[mine] += boxes
        mapping.append((lid, mine))
    lid = "lid"
    if any(theirs != mine for theirs, mine in mapping):
        db.execute("CREATE TEMP TABLE lid_map (theirs INTEGER PRIMARY KEY, mine INTEGER)")
        db.executemany("INSERT INTO lid_map VALUES (?, ?)", mapping)
        lid = "(SELECT mine FROM lid_map WHERE theirs = lid)"
    shift = {"r": loader.rid, "b": loader.bid}
    summary = ", ".join(f"c{i}" for i in range(SUMMARY_COLUMNS))
    db.execute(
        "INSERT INTO records SELECT rid + :r, id, split, width, height, nboxes, nlabels, "
        f"min_side, max_side, {summary} FROM w.records ORDER BY rid",
        shift,
    )
    db.execute(
        "INSERT INTO record_info SELECT rid + :r, file, attrs, offset, length, box0 + :b, "
        "counts FROM w.record_info ORDER BY rid",
        shift,
    )
    db.execute(
        f"INSERT INTO boxes SELECT bid + :b, rid + :r, {lid}, x, y, w, h, crowd, attrs "
        "FROM w.boxes ORDER BY bid",
        shift,
    )
    db.execute(
        f"INSERT INTO record_labels SELECT {lid}, n, rid + :r FROM w.record_labels ORDER BY rowid",
        shift,
    )
    loader.rid += done.records
    loader.bid += done.boxes
