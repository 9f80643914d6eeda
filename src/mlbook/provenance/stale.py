"""Stale weights: which files recorded for an earlier run differ from the files now.

Weights are only as good as the code that builds the model: when a run loads
the weights of an earlier run, :func:`stale_files` compares that run's recorded
files (path and sha256) with the files in the project now, and
:func:`stale_summary` turns the changes into one warning line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlbook._fs import sha256_file
from mlbook.provenance.files import UsedFile

__all__ = ["Change", "stale_files", "stale_summary"]


@dataclass(frozen=True)
class Change:
    """One recorded file that is not the same now."""

    path: str
    kind: Literal["modified", "deleted"]
    recorded_sha256: str
    current_sha256: str | None  # None when deleted


def stale_files(recorded: Iterable[UsedFile], root: Path | str) -> list[Change]:
    """The recorded files whose content differs now (or that are gone), sorted by path."""
    base = Path(root)
    changes: list[Change] = []
    for used in sorted(recorded, key=lambda u: u.path):
        path = base / used.path
        try:
            current = sha256_file(path)
        except OSError:
            changes.append(Change(used.path, "deleted", used.sha256, None))
            continue
        if current == used.sha256:
            continue
        changes.append(Change(used.path, "modified", used.sha256, current))
    return changes


def stale_summary(changes: Iterable[Change], run_id: str) -> str | None:
    """A one-line warning for the changes since ``run_id``, or ``None`` when there are none."""
    items = list(changes)
    if not items:
        return None
    shown = ", ".join(f"{c.path} ({c.kind})" for c in items[:5]) + (
        f" and {len(items) - 5} more" if len(items) > 5 else ""
    )
    return (
        f"the code changed since run {run_id} wrote these weights: {shown}; "
        f"see `mlbook diff {run_id}`"
    )
