"""Editing a conclusion (the UI's journal editor): only that text changes, conflicts are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlbook.errors import ProvenanceError
from mlbook.provenance.journal import (
    add_entry,
    add_note,
    digest,
    read_journal,
    record_step,
    set_conclusions,
)

HAND_WRITTEN = """# Our journal

Free text at the top, kept.

## [E1] First try
<!-- mlbook:status E1 -->
Status: TODO · created 2026-01-01
<!-- /mlbook:status -->
Why we try this.

### Steps
<!-- mlbook:steps E1 -->
<!-- /mlbook:steps -->

### Conclusions
Old conclusion, line one.

#### A sub-heading stays inside
Line two.

### Notes
<!-- mlbook:notes E1 -->
- 2026-01-02: a note
<!-- /mlbook:notes -->

## [E2] Second
Text of E2 with no blocks at all.
"""


def test_set_conclusions_replaces_only_that_text(tmp_path: Path) -> None:
    path = tmp_path / "EXPERIMENT_LOG.md"
    path.write_text(HAND_WRITTEN)
    [e1, _] = read_journal(path)
    assert e1.conclusions == (
        "Old conclusion, line one.\n\n#### A sub-heading stays inside\nLine two."
    )
    written = set_conclusions(
        path, "E1", "New **finding**.\r\nSecond line.", based_on=digest(e1.conclusions)
    )
    assert written == "New **finding**.\nSecond line."
    text = path.read_text()
    assert text == HAND_WRITTEN.replace(
        "Old conclusion, line one.\n\n#### A sub-heading stays inside\nLine two.\n",
        "New **finding**.\nSecond line.\n",
    )
    assert read_journal(path)[0].conclusions == written
    assert read_journal(path)[0].notes == ["2026-01-02: a note"]
    # the journal's own writers still work around it
    record_step(path, "E1", "small", "run-1", "done", {"acc": 0.5}, None, None)
    add_note(path, "E1", "later", None)
    assert read_journal(path)[0].conclusions == written
    set_conclusions(path, "E1", "")
    assert read_journal(path)[0].conclusions == ""
    assert "### Notes\n<!-- mlbook:notes E1 -->" in path.read_text()


def test_conclusions_added_where_missing(tmp_path: Path) -> None:
    path = tmp_path / "EXPERIMENT_LOG.md"
    path.write_text(HAND_WRITTEN)
    set_conclusions(path, "E2", "E2 works.")
    assert path.read_text().endswith(
        "Text of E2 with no blocks at all.\n\n### Conclusions\nE2 works.\n"
    )
    add_note(path, "E2", "a note", None)
    assert read_journal(path)[1].conclusions == "E2 works."
    # an entry with notes but no conclusions heading: inserted before the notes
    fresh = tmp_path / "fresh.md"
    add_entry(fresh, "E3", "three")
    fresh.write_text(fresh.read_text().replace("### Conclusions\n", ""))
    add_note(fresh, "E3", "n", None)
    set_conclusions(fresh, "E3", "c")
    [entry] = read_journal(fresh)
    assert entry.conclusions == "c" and len(entry.notes) == 1
    assert fresh.read_text().index("### Conclusions") < fresh.read_text().index("### Notes")


def test_a_concurrent_edit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "EXPERIMENT_LOG.md"
    path.write_text(HAND_WRITTEN)
    seen = digest(read_journal(path)[0].conclusions)
    path.write_text(HAND_WRITTEN.replace("Line two.", "Line two, edited in an editor."))
    before = path.read_bytes()
    with pytest.raises(ProvenanceError, match="the conclusions of E1 changed on disk"):
        set_conclusions(path, "E1", "mine", based_on=seen)
    assert path.read_bytes() == before
    # a change elsewhere (a run's step line) is no conflict
    record_step(path, "E1", "small", "run-1", "done", {}, None, None)
    set_conclusions(path, "E1", "mine", based_on=digest(read_journal(path)[0].conclusions))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ok\n### Notes", "line 2: the heading '### Notes' would end the conclusions"),
        ("## [E9] x", "line 1: the heading"),
        ("<!-- mlbook:notes E1 -->", "line 1: mlbook markers are not allowed"),
        ("```\ncode", "a code fence"),
    ],
)
def test_text_that_would_break_the_journal_is_refused(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "EXPERIMENT_LOG.md"
    path.write_text(HAND_WRITTEN)
    with pytest.raises(ProvenanceError, match=problem):
        set_conclusions(path, "E1", text)
    assert path.read_text() == HAND_WRITTEN
    with pytest.raises(ProvenanceError, match="no entry for E7"):
        set_conclusions(path, "E7", "x")
