"""``mlbook checkout``: a run's code (by ID or a unique prefix), or a commit, in a new directory.

A run is looked up in the run store first (a unique prefix of its ID is
enough, as everywhere a run is named), and its recorded ``before`` or ``after``
commit is written, whichever ``[git] commits`` mode made it; anything else is
taken as a commit or ref. Pointed files get their bytes back from the project
(:func:`mlbook.provenance.git.checkout`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlbook.errors import ExperimentError, ProvenanceError
from mlbook.provenance.git import Checkout, checkout

if TYPE_CHECKING:
    from mlbook.project import Project

__all__ = ["checkout_run"]


def checkout_run(
    project: Project,
    target: str,
    dest: Path | str,
    *,
    after: bool = False,
    missing_ok: bool = False,
) -> Checkout:
    """Write run ``target``'s code before (or ``after``) the run, or commit ``target``, to ``dest``.

    Raises:
        ProvenanceError: an ambiguous run ID prefix; a run without that commit
            (says why); an unknown commit; ``dest`` not empty; pointed files
            whose bytes are gone (unless ``missing_ok``).
    """
    stage = "after" if after else "before"
    commit, label = target, target
    store_file = project.state_dir / "runs.sqlite"
    if store_file.is_file():
        from mlbook.experiments.query import get_run

        try:
            record = get_run(project, target)
        except ExperimentError as exc:
            if "ambiguous" in str(exc):
                raise ProvenanceError(str(exc)) from exc
        else:
            recorded = record.commit_after if after else record.commit_before
            if recorded is None:
                why = f" ({record.commit_reason})" if record.commit_reason else ""
                raise ProvenanceError(
                    f"run {record.id} has no {stage} commit{why}; nothing to check out"
                )
            commit, label = recorded, f"run {record.id} ({stage})"
    return checkout(project.root, commit, dest, stage, missing_ok=missing_ok, label=label)
