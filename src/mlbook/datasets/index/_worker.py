"""The worker process of a two-process index build:
``python -P -m mlbook.datasets.index._worker``.

It reads one :class:`~._parallel.Start` frame from stdin, indexes that part of
``records.jsonl`` into the scratch file it names, and answers on stdout (see
:mod:`._parallel` for the protocol). The end of stdin, whenever it comes, means the
builder is done with the scratch file or gone: the worker deletes it and exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
import threading
import traceback
from pathlib import Path
from typing import IO

from mlbook.datasets.index._parallel import (
    Done,
    Failed,
    Message,
    Progress,
    Start,
    frame,
    read,
)
from mlbook.datasets.index._rows import Loader, blocks, decode_block, open_build
from mlbook.datasets.metadata import no_gc
from mlbook.errors import DatasetError, MlbookError, RecordError

__all__ = ["main"]


def _read_start(stream: IO[bytes]) -> Start | None:
    message = read(stream)
    return message if isinstance(message, Start) else None


def _watch_stdin(scratch: Path) -> None:
    """Wait for the end of stdin (the builder is done with us, or gone), then delete
    the scratch file and exit."""
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    scratch.unlink(missing_ok=True)
    os._exit(0)


def _index(start: Start, out: IO[bytes]) -> Done:
    records = Path(start.records)
    scratch = Path(start.scratch)
    try:
        handle = records.open("rb")
    except OSError as exc:
        raise DatasetError(f"{records}: cannot read the records: {exc.strerror}") from exc
    try:
        db = open_build(scratch)
        try:
            loader = Loader(db, start.columns, start.labels)
            with no_gc():
                for first_line, offset, block in blocks(handle, None, start.start, start.end):
                    decoded, spans = decode_block(first_line, offset, block, records)
                    loader.load(decoded, spans)
                    out.write(frame(Progress(offset + len(block) - start.start)))
                    out.flush()
            loader.finish()
            db.execute("COMMIT")
        finally:
            db.close()
    except (sqlite3.Error, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        raise DatasetError(f"{scratch}: cannot write the index: {exc}") from exc
    finally:
        handle.close()
    return Done(loader.rid, loader.bid)


def main() -> None:
    """Read the start message from stdin, index that part, report on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the builder stops us
    out = sys.stdout.buffer
    start = _read_start(sys.stdin.buffer)
    if start is None:  # the builder went away before it sent the work
        return
    scratch = Path(start.scratch)
    threading.Thread(target=_watch_stdin, args=(scratch,), daemon=True).start()
    answer: Message
    try:
        answer = _index(start, out)
    except BrokenPipeError:
        answer = Failed("the builder went away")
    except RecordError as exc:
        answer = Failed(str(exc), exc.line, exc.field, exc.problem, record=True)
    except MlbookError as exc:
        answer = Failed(str(exc))
    except Exception as exc:
        traceback.print_exc()
        answer = Failed(f"{type(exc).__name__}: {exc}", bug=True)
    try:
        out.write(frame(answer))
        out.flush()
    except OSError:  # the builder is gone: nobody will read the scratch file
        scratch.unlink(missing_ok=True)
        os._exit(1)
    threading.Event().wait()  # until the watcher sees the end of stdin


if __name__ == "__main__":
    main()
