"""Provenance around each run: snapshots, data version, environment and the journal step.

:class:`ProvenanceObserver` has the runner's observer hooks (``before_run``,
``after_run``, ``experiment_created``); it needs nothing from the runner but
the attributes listed in :class:`RunLike`, and a store with ``set_provenance``.
For each ``run``-mode run it:

1. adds the run's step line to ``EXPERIMENT_LOG.md`` (status ``running``);
2. snapshots the code before the run (``[git] commits`` in ``mlbook.toml``:
   hidden refs, real commits on the branch, or off), records the commit (or why
   there is none), the dataset version and the Python version in the store;
3. after the run, completes the step line with the final status and metrics,
   snapshots the code with its results (the run's output directory ``info.dir``
   is included although ``Models/outputs/`` is git-ignored; files over
   ``[git] max_file_size`` go in as pointers, their bytes staying in
   ``Models/outputs/``), then adds the after commit to the line.

``test`` runs and runs without a store are left alone.
"""

from __future__ import annotations

import math
import platform
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlbook.errors import MlbookError, MlbookWarning, ProvenanceError
from mlbook.project import Project
from mlbook.provenance.git import (
    Snapshot,
    git_info,
    has_identity,
    refuse_in_progress,
    snapshot,
)
from mlbook.provenance.journal import Step, add_entry, read_journal, record_step, record_steps

if TYPE_CHECKING:
    from mlbook.experiments.query import RunRecord

__all__ = ["ProvenanceObserver", "RunLike", "StoreLike", "journal_runs", "settle_journal"]


class RunLike(Protocol):
    """What the observer reads from a run (the runner's ``RunInfo`` has it all)."""

    run_id: str
    experiment: str
    version: str
    mode: str
    status: str
    metrics: dict[str, Any]


class StoreLike(Protocol):
    """What the observer writes to (the run store's ``set_provenance``)."""

    def set_provenance(self, run_id: str, **fields: Any) -> None:
        """Set provenance columns of a run."""


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def _step_status(status: str) -> str:
    return "done" if status == "completed" else status


def settle_journal(project: Project) -> int:
    """Give steps still marked ``running`` the status their run ended with in the store.

    A runner killed with ``kill -9`` never writes the end of its step; the store
    marks such runs ``crashed`` when it next opens, and this brings the journal in
    line. Returns how many steps changed.
    """
    path = project.journal_path
    if not path.is_file() or not (project.state_dir / "runs.sqlite").is_file():
        return 0
    changed = 0
    for entry in read_journal(path):
        for step in entry.steps:
            if step.status != "running":
                continue
            from mlbook.experiments.query import get_run  # only then: a run's start-up path

            try:
                record = get_run(project, step.run_id)
            except MlbookError:
                continue
            if record.status == "running":
                continue
            record_step(
                path,
                entry.id,
                step.version,
                step.run_id,
                _step_status(record.status),
                _numbers(record.metrics or {}),
                record.commit_before,
                record.commit_after,
            )
            changed += 1
    return changed


def journal_runs(
    project: Project, records: Sequence[RunRecord], titles: Mapping[str, str] | None = None
) -> None:
    """Give finished runs that came from elsewhere their step lines, one write per experiment.

    Runs unpacked from a pack or imported from MLflow appear in the journal as
    if they had run here; an experiment without an entry gets one, titled from
    ``titles`` (experiment ID -> title).

    Raises:
        ProvenanceError: a broken journal.
    """
    path = project.journal_path
    present = {entry.id for entry in read_journal(path)}
    steps: dict[str, list[Step]] = {}
    for record in records:
        status = _step_status(record.status)
        steps.setdefault(record.experiment, []).append(
            Step(
                0,
                record.version,
                record.id,
                status == "done",
                status,
                _numbers(record.metrics),
                record.commit_before,
                record.commit_after,
            )
        )
    for exp_id, lines in steps.items():
        if exp_id not in present:
            add_entry(path, exp_id, (titles or {}).get(exp_id, ""))
        record_steps(path, exp_id, lines)


class ProvenanceObserver:
    """Run hooks that record provenance and keep the journal in step (see the module doc)."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._before: dict[str, Snapshot] = {}

    def _snapshot(
        self, info: RunLike, stage: str, message: str, previous: Snapshot | None = None
    ) -> Snapshot:
        """The snapshot, or a :class:`Snapshot` without a commit saying why (never raises).

        A missing commit is also printed as one warning, once per run when both
        stages miss it for the same reason (no git); ``[git] commits = "off"`` is
        a choice, not a loss, and stays quiet.
        """
        settings = self.project.config.git
        if settings.commits == "off":
            return Snapshot(commit=None, reason='[git] commits = "off" in mlbook.toml')
        out_dir = getattr(info, "dir", None)
        include: list[Path] = []
        if stage == "after" and out_dir and Path(out_dir).is_dir():
            # results, logs, plots and final weights; intermediate checkpoints stay out
            include = [p for p in sorted(Path(out_dir).iterdir()) if p.name != "checkpoints"]
        try:
            shot = snapshot(
                self.project.root,
                info.run_id,
                stage,
                message,
                settings.max_file_bytes,
                settings.commits,
                include=include,
                data_dir=None if settings.snapshot_data else self.project.area_name("datasets"),
            )
            # no git or no repository: a setting may be what the user wants
            hint = "" if shot.commit else '; or set [git] commits = "off"'
        except (MlbookError, OSError) as exc:
            shot, hint = Snapshot(commit=None, reason=str(exc), mode=settings.commits), ""
        if shot.commit is None and not _same_loss(shot, previous):
            _warn(f"run {info.run_id}: no {stage} commit: {shot.reason}{hint}")
        elif shot.commit and shot.reason and not shot.reason.startswith("nothing changed"):
            _warn(f"run {info.run_id}: {stage} commit {shot.short}: {shot.reason}")
        return shot

    def _number(self, info: RunLike) -> int:
        try:
            entries = read_journal(self.project.journal_path)
        except MlbookError:
            return 0  # already warned about by the journal update
        for entry in entries:
            if entry.id == info.experiment:
                for step in entry.steps:
                    if step.run_id == info.run_id:
                        return step.number
        return 0

    def preflight(self, mode: str) -> None:
        """Refuse ``run``-mode runs that could not get their branch commits (merge, rebase).

        Raises:
            ProvenanceError: ``[git] commits = "branch"`` while the repository is in
                the middle of a merge, rebase, cherry-pick or revert, or detached.
        """
        if mode != "run":
            return
        try:
            settle_journal(self.project)
        except MlbookError as exc:  # a side channel: never stops the runs
            _warn(f"journal: {exc}")
        if self.project.config.git.commits != "branch":
            return
        info = git_info(self.project.root)
        if isinstance(info, str):
            return
        refuse_in_progress(info)
        if not has_identity(info):
            raise ProvenanceError(
                f"cannot commit on the branch: git does not know who you are in {info.toplevel}; "
                'run `git config user.name "..."` and `git config user.email "..."`'
            )

    def _journal_step(
        self, info: RunLike, status: str, before: str | None, after: str | None
    ) -> bool:
        """Add or update the run's journal step; a broken journal is a warning, not a stop.

        Returns:
            whether the step was written.
        """
        metrics = _numbers(info.metrics) if status != "running" else {}
        try:
            record_step(
                self.project.journal_path,
                info.experiment,
                info.version,
                info.run_id,
                status,
                metrics,
                before,
                after,
                title=str(getattr(info, "title", "") or ""),
            )
        except MlbookError as exc:
            _warn(f"run {info.run_id}: journal step not written: {exc}")
            return False
        return True

    def before_run(self, info: RunLike, store: StoreLike | None) -> None:
        """Journal step ``running``, the before snapshot, data version and Python version."""
        if store is None or info.mode != "run":
            return
        journal_ok = self._journal_step(info, "running", None, None)
        tag = f"[{info.experiment}.{self._number(info)}]"
        shot = self._snapshot(info, "before", f"{tag} before run {info.version}")
        self._before[info.run_id] = shot
        fields: dict[str, Any] = {
            "commit_before": shot.commit,
            "commit_reason": shot.reason or None,
            "python": platform.python_version(),
        }
        fields.update(self._datasets(info, store))
        store.set_provenance(info.run_id, **fields)
        if shot.commit and journal_ok:
            self._journal_step(info, "running", shot.commit, None)

    def _datasets(self, info: RunLike, store: StoreLike) -> dict[str, Any]:
        """Record the datasets of the run (DVC-aware); a dirty one is one warning line."""
        from mlbook.provenance.datasets import record_run_datasets

        try:
            version, problems = record_run_datasets(
                self.project, info.run_id, getattr(info, "dataset_dir", None), store
            )
        except MlbookError as exc:  # a malformed .dvc file: the run goes on, and says so
            _warn(f"run {info.run_id}: datasets not recorded: {exc}")
            return {}
        for problem in problems:
            _warn(f"run {info.run_id}: {problem}")
        return {"data_version": version} if version else {}

    def after_run(self, info: RunLike, store: StoreLike | None) -> None:
        """The after snapshot (results included) and the completed journal step."""
        if store is None or info.mode != "run":
            return
        metrics = _numbers(info.metrics)
        tag = f"[{info.experiment}.{self._number(info)}]"
        if info.status == "completed" and metrics:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in list(metrics.items())[:3])
            message = f"{tag} results: {shown}"
        else:
            message = f"{tag} after run {info.version} ({info.status})"
        before = self._before.get(info.run_id)  # kept: a run may be finished twice
        before_commit = before.commit if before else None
        status = _step_status(info.status)
        journal_ok = self._journal_step(info, status, before_commit, None)  # the snapshot holds it
        after = self._snapshot(info, "after", message, previous=before)
        fields: dict[str, Any] = {"commit_after": after.commit}
        if after.commit is None or (after.reason and not after.reason.startswith("nothing")):
            fields["commit_reason"] = _reasons(before, after)
        store.set_provenance(info.run_id, **fields)
        if after.commit and journal_ok:
            self._journal_step(info, status, before_commit, after.commit)  # ...and it names it

    def experiment_created(self, project: Project, ident: str, title: str, path: Path) -> None:
        """Add the journal entry of a new experiment."""
        add_entry(project.journal_path, ident, title)


def _warn(message: str) -> None:
    warnings.warn(message, MlbookWarning, stacklevel=3)


def _same_loss(shot: Snapshot, previous: Snapshot | None) -> bool:
    """True when the before snapshot already missed its commit for this same reason."""
    return previous is not None and previous.commit is None and previous.reason == shot.reason


def _reasons(before: Snapshot | None, after: Snapshot) -> str:
    """``commit_reason`` once the after snapshot is known: one reason, or each stage's."""
    lost_before = before.reason if before is not None and before.commit is None else ""
    if lost_before == after.reason:
        return after.reason
    if lost_before:
        return f"before: {lost_before}; after: {after.reason}"
    return f"after: {after.reason}"
