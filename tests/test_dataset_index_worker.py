"""The two-process index build: the same index as one process, the same errors, and
nothing trusted left behind when either process is killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from test_dataset_index import LABELS, count_of, make_records, write_dataset

from mlbook.datasets import Record
from mlbook.datasets.index import Query, _rows, build_index, index_path, index_state
from mlbook.errors import DatasetError, RecordError

WORKER = b"mlbook.datasets.index._worker"


def children(parent: int) -> list[int]:
    """The live processes whose parent is ``parent`` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state not in ("Z", "X"):
            found.append(int(entry))
    return found


def workers() -> list[int]:
    """This process's index workers."""
    found = []
    for pid in children(os.getpid()):
        try:
            if WORKER in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class Task:
    """A progress task that remembers what it was told, and can act on each step."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def advance(self, amount: int = 1) -> None:
        self.reporter.steps.append(amount)
        self.reporter.workers.update(workers())
        if self.reporter.on_step is not None:
            self.reporter.on_step()


class Reporter:
    def __init__(self, on_step: Any = None) -> None:
        self.steps: list[int] = []
        self.total: int | None = None
        self.workers: set[int] = set()
        self.on_step = on_step

    def task(self, description: str, total: int | None = None) -> Task:
        self.total = total
        return Task(self)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Record]]:
    records = make_records(6_000, seed=31)
    root = write_dataset(tmp_path_factory.mktemp("worker") / "ds", records)
    return root, records


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def label_counts(path: Path) -> dict[int, dict[str, int]]:
    """Every record's label counts, from the summary columns and record_labels."""
    names = dict(rows(path, "SELECT lid, name FROM labels"))
    columns = rows(path, "SELECT col, name FROM labels WHERE col IS NOT NULL")
    counts: dict[int, dict[str, int]] = {}
    for rid, *values in rows(
        path, f"SELECT rid, {', '.join(f'c{c}' for c, _ in columns)} FROM records"
    ):
        counts[rid] = {name: n for (_, name), n in zip(columns, values, strict=True) if n}
    for lid, n, rid in rows(path, "SELECT lid, n, rid FROM record_labels"):
        counts[rid][names[lid]] = n
    return counts


def test_two_processes_build_what_one_process_builds(
    dataset: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    root, records = dataset  # label ids and summary columns may differ: compare by name
    one = build_index(root, tmp_path / "one.sqlite", processes=1)
    reporter = Reporter()
    two = build_index(root, tmp_path / "two.sqlite", reporter=reporter, processes=2)
    assert reporter.workers, "no worker process ran"
    size = (root / "records.jsonl").stat().st_size
    assert reporter.total == sum(reporter.steps) == size  # the bar reaches the end
    assert two.hash == one.hash and two.fresh
    for sql in (
        "SELECT rid, id, split, width, height, nboxes, nlabels, min_side, max_side FROM records",
        "SELECT * FROM record_info",
        "SELECT bid, rid, labels.name, x, y, w, h, crowd, attrs FROM boxes JOIN labels USING (lid)"
        " ORDER BY bid",
        "SELECT name, records, boxes FROM labels ORDER BY name",
        "SELECT * FROM meta WHERE key != 'signature'",
    ):
        assert rows(two.path, sql) == rows(one.path, sql), sql
    assert label_counts(two.path) == label_counts(one.path)
    assert len(rows(two.path, "SELECT * FROM records")) == len(records)
    # queries on the two-process index equal a brute-force filter
    build_index(root, processes=2)
    for label in LABELS:
        for n in (1, 2, 3):
            assert Query(root, f"count('{label}') >= {n}").ids() == [
                r.id for r in records if count_of(r, label) >= n
            ]
    assert Query(root, "box(w < 10 and label = car)").ids() == [
        r.id for r in records if any(b.width < 10 and b.name == "car" for b in r.boxes)
    ]


def test_labels_met_late_by_either_process_are_mapped_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # blocks of 4 KB: the builder's first block (what it tells the worker) has car and
    # person only; it meets "late" later, while the worker meets "new" and then "late"
    monkeypatch.setattr(_rows, "_BLOCK", 4 << 10)
    records = [Record(id=f"a{i}", labels=["car", "person"][: 1 + i % 2]) for i in range(400)]
    records += [Record(id=f"b{i}", labels=["late"], split="train") for i in range(100)]
    records += [Record(id=f"c{i}", labels=["new", "car"]) for i in range(300)]
    records += [Record(id=f"d{i}", labels=["late", "new"], counts={"late": 3}) for i in range(300)]
    root = write_dataset(tmp_path / "ds", records)
    one = build_index(root, tmp_path / "one.sqlite", processes=1)
    reporter = Reporter()
    two = build_index(root, tmp_path / "two.sqlite", reporter=reporter, processes=2)
    assert reporter.workers and len(reporter.steps) > 5
    split = int((root / "records.jsonl").stat().st_size * 0.48)
    assert b'"late"' in (root / "records.jsonl").read_bytes()[4 << 10 : split]
    labels = "SELECT name, records, boxes FROM labels ORDER BY name"
    assert (
        rows(two.path, labels)
        == rows(one.path, labels)
        == [
            ("car", 700, 0),
            ("late", 400, 0),
            ("new", 600, 0),
            ("person", 200, 0),
        ]
    )
    assert label_counts(two.path) == label_counts(one.path)


def test_a_small_file_stays_in_one_process_unless_told(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", make_records(300, seed=32))
    reporter = Reporter()
    build_index(root, reporter=reporter)
    assert not reporter.workers
    with pytest.raises(ValueError, match="processes must be 1, 2 or None, not 3"):
        build_index(root, processes=3)


def _with_bad_lines(root: Path, bad: dict[int, bytes]) -> None:
    path = root / "records.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    for number, text in bad.items():
        lines[number - 1] = text + b"\n"
    path.write_bytes(b"".join(lines))


def _error(root: Path, processes: int) -> str:
    with pytest.raises(RecordError) as caught:
        build_index(root, processes=processes)
    assert index_state(root).state == "missing"
    path = index_path(root)
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temp file left
    return str(caught.value)


@pytest.mark.parametrize(
    ("bad", "line"),
    [
        ({4_500: b'{"id": "x", "width": "wide"}'}, 4_500),  # the worker's part
        ({5_999: b'{"id": "y", "boxes": [{"name": "car", "x1": 1}'}, 5_999),  # bad JSON
        ({700: b'{"id": 3, "split": 7}', 4_000: b"[1, 2]"}, 700),  # both parts: the first
    ],
)
def test_a_bad_record_in_the_workers_part_reads_as_in_one_process(
    tmp_path: Path, bad: dict[int, bytes], line: int
) -> None:
    root = write_dataset(tmp_path / "ds", make_records(6_000, seed=33))
    _with_bad_lines(root, bad)
    split = int((root / "records.jsonl").stat().st_size * 0.48)
    assert (root / "records.jsonl").read_bytes()[:split].count(b"\n") < max(bad)  # worker's
    one = _error(root, 1)
    assert f"records.jsonl:{line}: " in one
    assert _error(root, 2) == one


def test_a_killed_worker_fails_the_build_with_one_line(
    dataset: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    root, _ = dataset
    killed: list[int] = []

    def kill_the_worker() -> None:
        for pid in workers():
            if not killed:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    path = tmp_path / "index" / "ds.sqlite"
    with pytest.raises(DatasetError) as caught:
        build_index(root, path, reporter=Reporter(kill_the_worker), processes=2)
    message = str(caught.value)
    assert killed and "\n" not in message
    assert message == (
        f"{root / 'records.jsonl'}: the index worker (pid {killed[0]}) was killed (SIGKILL) "
        "before it finished; no index was kept, build it again"
    )
    assert list(path.parent.iterdir()) == []  # no index, no temp or scratch file
    assert not alive(killed[0]) and not workers()


_KILLED_BUILDER = """
import os, signal, sys
from pathlib import Path
from mlbook.datasets.index import build_index

def children():
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.append(entry)
    return found

class Task:
    def __enter__(self): return self
    def __exit__(self, *exc): return None
    def advance(self, amount=1):
        print(*children(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # killed with its worker at work

class Reporter:
    def task(self, description, total=None): return Task()

build_index(Path(sys.argv[1]), reporter=Reporter(), processes=2)
"""


def test_a_killed_builder_stops_its_worker_and_leaves_no_trusted_index(
    dataset: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    _, records = dataset
    copy = write_dataset(tmp_path / "ds", records)
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KILLED_BUILDER), str(copy)],
        capture_output=True,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    pids = [int(pid) for pid in child.stdout.split()]
    assert pids  # the worker was running
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids), "the worker outlived its builder"
    path = index_path(copy)
    assert not path.exists() and index_state(copy).state == "missing"
    leftovers = [p.name for p in path.parent.iterdir()]
    assert not [name for name in leftovers if name.endswith(".worker.tmp")]  # worker cleaned up
    assert Query(copy, "has(dog)").count_records() == sum(
        1 for r in records if count_of(r, "dog") >= 1
    )
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # leftovers removed
