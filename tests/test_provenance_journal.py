"""EXPERIMENT_LOG.md: entries, steps, status, notes; user bytes kept; broken markers refused."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlbook.errors import ProvenanceError
from mlbook.project import Project
from mlbook.provenance.journal import (
    add_entry,
    add_note,
    best_metric,
    read_journal,
    record_step,
    set_status,
)

TODAY_RE = r"\d{4}-\d{2}-\d{2}"


def test_add_entry_then_steps_then_status(tmp_path: Path) -> None:
    log = tmp_path / "EXPERIMENT_LOG.md"
    log.write_text("# Log\n\nmy intro")  # no final newline
    assert add_entry(log, "E012", "Wider  CNN on digits", "What it tries.")
    assert not add_entry(log, "E012", "again")
    record_step(log, "E012", "small", "20261124-1616-ab12", "running", {}, "83d45cdaaaa", None)
    record_step(
        log,
        "E012",
        "small",
        "20261124-1616-ab12",
        "done",
        {"acc": 0.96231},
        "83d45cdaaaa",
        "9af01b2bbbb",
    )
    record_step(log, "E012", "wide", "20261124-1700-cd34", "failed", {}, "83d45cdaaaa", None)
    text = log.read_text()
    assert text.startswith("# Log\n\nmy intro\n\n## [E012] Wider CNN on digits\n")
    assert (
        "<!-- mlbook:steps E012 -->\n"
        "1. [x] small — run 20261124-1616-ab12 · acc 0.9623 · 83d45cd → 9af01b2\n"
        "2. [ ] wide — run 20261124-1700-cd34 · failed · 83d45cd → ?\n"
        "<!-- /mlbook:steps -->\n"
    ) in text
    [entry] = read_journal(log)
    assert (entry.id, entry.title, entry.status, entry.line) == (
        "E012",
        "Wider CNN on digits",
        "IN PROGRESS",
        5,
    )
    assert re.fullmatch(TODAY_RE, entry.created or "")
    assert [(s.number, s.version, s.done, s.status) for s in entry.steps] == [
        (1, "small", True, "done"),
        (2, "wide", False, "failed"),
    ]
    assert entry.steps[0].metrics == {"acc": 0.9623}
    assert (entry.steps[0].before, entry.steps[0].after) == ("83d45cd", "9af01b2")
    assert best_metric(entry) == ("acc", 0.9623, "20261124-1616-ab12")
    assert set_status(log, "E012", "done") == "DONE"
    assert read_journal(log)[0].status == "DONE"


def test_note_is_dated_and_carries_the_commit(tmp_path: Path) -> None:
    log = tmp_path / "EXPERIMENT_LOG.md"
    add_entry(log, "E001", "first")
    note = add_note(log, "E001", "wider  is\nworse", "abcdef1234567")
    assert re.fullmatch(TODAY_RE + r" \(abcdef1\): wider is worse", note)
    add_note(log, "E001", "second", None)
    entry = read_journal(log)[0]
    assert entry.notes == [note, note[:10] + ": second"]
    assert "### Notes\n<!-- mlbook:notes E001 -->\n" in log.read_text()
    with pytest.raises(ProvenanceError, match="no entry for E404; create it with `mlbook new"):
        add_note(log, "E404", "x", None)
    with pytest.raises(ProvenanceError, match="the note is empty"):
        add_note(log, "E001", "  ", None)


def test_step_creates_a_missing_entry_and_blocks(tmp_path: Path) -> None:
    log = tmp_path / "EXPERIMENT_LOG.md"
    log.write_text("## [E007] written by hand\nsome words\n\n### Conclusions\nnone yet\n")
    record_step(log, "E007", "base", "r1", "done", {"loss": 0.5}, None, "abc1234")
    record_step(log, "E008", "base", "r2", "done", {"loss": 0.2}, None, None)
    assert log.read_text().startswith(
        "## [E007] written by hand\n"
        "<!-- mlbook:status E007 -->\nStatus: IN PROGRESS\n<!-- /mlbook:status -->\n"
        "some words\n\n### Steps\n<!-- mlbook:steps E007 -->\n"
        "1. [x] base — run r1 · loss 0.5 · ? → abc1234\n<!-- /mlbook:steps -->\n\n"
        "### Conclusions\nnone yet\n"
    )
    assert [e.id for e in read_journal(log)] == ["E007", "E008"]


def test_bad_status_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "EXPERIMENT_LOG.md"
    add_entry(log, "E1", "t")
    with pytest.raises(ProvenanceError, match="unknown status 'finished'; use one of: todo, in"):
        set_status(log, "E1", "finished")
    assert set_status(log, "E1", "in-progress") == "IN PROGRESS"


BROKEN = [
    ("<!-- mlbook:steps E1 -->\n1. [x] a — run r1\n", 5, "is never closed"),
    ("<!-- mlbook:steps E1 -->\n<!-- mlbook:notes E1 -->\n", 5, "is not closed before line 8"),
    ("<!-- /mlbook:steps -->\n", 5, "closes a block that was never opened"),
    ("<!-- mlbook: steps E1 -->\n<!-- /mlbook:steps -->\n", 5, "broken mlbook marker"),
    ("<!-- mlbook:steps E2 -->\n<!-- /mlbook:steps -->\n", 5, "mlbook block for E2 inside"),
    ("<!-- mlbook:stats E1 -->\n<!-- /mlbook:stats -->\n", 5, "unknown mlbook block 'stats'"),
]


@pytest.mark.parametrize(("tail", "line", "problem"), BROKEN)
def test_broken_marker_names_the_line_and_writes_nothing(
    tmp_path: Path, tail: str, line: int, problem: str
) -> None:
    log = tmp_path / "EXPERIMENT_LOG.md"
    add_entry(log, "E1", "t")
    text = log.read_text().replace("<!-- mlbook:steps E1 -->\n<!-- /mlbook:steps -->\n", "")
    text = text.replace("### Steps\n", "### Steps\n" + tail)
    log.write_text(text)
    line = text.splitlines().index(tail.splitlines()[0]) + 1
    for call in (
        lambda: read_journal(log),
        lambda: record_step(log, "E1", "v", "r9", "done", {}, None, None),
        lambda: set_status(log, "E1", "done"),
        lambda: add_note(log, "E1", "n", None),
    ):
        with pytest.raises(ProvenanceError, match=re.escape(f"{log}:{line}: ") + ".*" + problem):
            call()
        assert log.read_text() == text


def test_markers_inside_code_fences_and_indented_are_user_text(tmp_path: Path) -> None:
    log = tmp_path / "EXPERIMENT_LOG.md"
    user = "```\n## [E1] not a heading\n<!-- mlbook:steps E1 -->\n```\n    <!-- /mlbook:x -->\n"
    log.write_text(user)
    add_entry(log, "E1", "real")
    assert log.read_text().startswith(user)
    assert [e.id for e in read_journal(log)] == ["E1"]


def test_template_journal_parses(project: Project) -> None:
    text = resources.files("mlbook.templates").joinpath("project/EXPERIMENT_LOG.md").read_text()
    assert project.journal_path.read_text() == text
    assert read_journal(project.journal_path) == []
    add_entry(project.journal_path, "E001", "baseline")
    assert project.journal_path.read_text().startswith(text + "\n## [E001] baseline\n")
    assert not (project.root / ".EXPERIMENT_LOG.md.lock").exists()  # the lock is in .mlbook/


# ---- property: updates never change a user byte

_user_line = st.text(
    alphabet=st.sampled_from(list("ab #[]<>!-/:`~*·→ \t\ré1")), max_size=12
).filter(
    lambda s: (
        not re.match(r"^(## \[|<!--\s*/?\s*mlbook|\s{0,3}(```|~~~))", s)
        and not re.match(r"^#{2,6} +(steps|conclusions)", s, re.IGNORECASE)
    )
)
_user_text = st.lists(_user_line, max_size=4).map(lambda lines: "".join(x + "\n" for x in lines))


def _strip_owned(text: str) -> str:
    return re.sub(r"(?ms)^<!-- mlbook:(\w+) \S+ -->\n.*?^<!-- /mlbook:\1 -->\n", "", text)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_user_text, min_size=6, max_size=6), metric=st.floats(0, 1))
def test_updates_never_change_user_bytes(tmp_path: Path, parts: list[str], metric: float) -> None:
    log = tmp_path / "EXPERIMENT_LOG.md"
    text = (
        f"{parts[0]}## [E5] title\n<!-- mlbook:status E5 -->\nStatus: TODO\n"
        f"<!-- /mlbook:status -->\n{parts[1]}<!-- mlbook:steps E5 -->\n"
        f"1. [x] a — run r1 · acc 0.5\n<!-- /mlbook:steps -->\n{parts[2]}"
        f"<!-- mlbook:notes E5 -->\n<!-- /mlbook:notes -->\n{parts[3]}"
        f"## [E6] other\n{parts[4]}<!-- mlbook:status E6 -->\nStatus: DONE\n"
        f"<!-- /mlbook:status -->\n{parts[5]}"
    )
    log.write_bytes(text.encode())
    record_step(log, "E5", "b", "r2", "done", {"acc": metric}, "abcdef0", "1234567")
    record_step(log, "E5", "a", "r1", "failed", {}, None, None)
    set_status(log, "E6", "todo")
    add_note(log, "E5", "a note", "abcdef0")
    after = log.read_bytes().decode()
    assert _strip_owned(after) == _strip_owned(text)
    [e5, e6] = read_journal(log)
    assert [s.run_id for s in e5.steps] == ["r1", "r2"] and e6.status == "TODO"


# ---- concurrency: two processes updating at once lose nothing

_WRITER = """
import sys
from mlbook.provenance.journal import record_step
path, tag = sys.argv[1], sys.argv[2]
for i in range(25):
    record_step(path, "E1", tag, f"{tag}-{i}", "done", {"acc": i / 100}, None, None)
"""


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    log = tmp_path / "EXPERIMENT_LOG.md"
    add_entry(log, "E1", "race")
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(log), tag]) for tag in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    steps = read_journal(log)[0].steps
    assert sorted(s.run_id for s in steps) == sorted(f"{t}-{i}" for t in "ab" for i in range(25))
    assert sorted(s.number for s in steps) == list(range(1, 51))
