"""Which run an export carries, and why: the best completed run by the selection metric.

The selection metric is, first found: the ``metric``/``goal`` given to
:func:`select_run`, the script's ``Experiment(metric=..., goal=...)``, then
``[experiments] metric`` / ``goal`` in ``mlbook.toml``. The best run is the
completed ``run``-mode run with the highest (``max``) or lowest (``min``)
final value of that metric (NaN and missing values never win; a tie goes to
the newest run). Without a selection metric the latest completed run is taken,
and :attr:`Selection.reason` says so and how to name one. ``run_id`` (a unique
prefix is enough) picks one run on purpose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlbook.errors import ExperimentError, ExportError

if TYPE_CHECKING:
    from mlbook.experiments.query import RunRecord
    from mlbook.project import Project

__all__ = ["Selection", "metric_value", "select_run"]


@dataclass(frozen=True)
class Selection:
    """The run an export carries, the metric that picked it and why (one line)."""

    run: RunRecord
    reason: str
    metric: str | None = None
    goal: str = "max"

    @property
    def value(self) -> float | None:
        """The run's value of the selection metric (``None`` without one)."""
        return metric_value(self.run.metrics, self.metric) if self.metric else None


def metric_value(metrics: dict[str, Any], key: str | None) -> float | None:
    """``metrics[key]`` as a finite float, or ``None``."""
    if key is None:
        return None
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def select_run(
    project: Project,
    experiment: str,
    version: str | None = None,
    run_id: str | None = None,
    *,
    metric: str | None = None,
    goal: str = "max",
    source: str = "",
) -> Selection:
    """The run to export: ``run_id``, else the best completed run by ``metric``, else the latest.

    Args:
        project: the project.
        experiment: the experiment ID.
        version: only runs of this version (default: any).
        run_id: this run (a unique prefix of its ID).
        metric: the selection metric (``None``: take the latest completed run).
        goal: ``"max"`` or ``"min"``.
        source: where the metric was named, for the reason (``Experiment(metric=...)``).

    Raises:
        ExportError: no such run, a run of another experiment or version, a run
            that did not complete, no completed run, or no completed run with
            the metric (the message lists the metrics the runs have).
        ExperimentError: an unknown version (the message lists the versions).
    """
    from mlbook.experiments.query import get_run, runs

    if goal not in ("max", "min"):
        raise ExportError(f"goal must be 'max' or 'min', got {goal!r}")
    if run_id is not None:
        try:
            run = get_run(project, run_id)
        except ExperimentError as exc:
            raise ExportError(str(exc)) from exc
        if run.experiment != experiment or (version is not None and run.version != version):
            raise ExportError(
                f"run {run.id} is {run.experiment} --version {run.version}, not "
                f"{experiment}{' --version ' + version if version else ''}"
            )
        if run.status != "completed":
            raise ExportError(f"run {run.id} is {run.status}; export a completed run")
        return Selection(run, f"run {run.id}, as asked (--run)", metric, goal)
    found = list(
        runs(project, experiment=experiment, version=version, status="completed", mode="run")
    )
    which = f"{experiment} --version {version}" if version else experiment
    if not found:
        if version is not None:
            from mlbook.experiments.discovery import load_experiment

            load_experiment(project, experiment).params(version)  # unknown version: says so
        raise ExportError(f"no completed run of {which}; run it first with `mlbook run {which}`")
    if metric is None:
        return Selection(
            found[0],
            f"the latest completed run of {which} (no selection metric: name one with "
            'Experiment(metric="acc", goal="max") or [experiments] metric to export the best)',
        )
    scored = [
        (value, run) for run in found if (value := metric_value(run.metrics, metric)) is not None
    ]
    if not scored:
        have = sorted({key for run in found for key in run.metrics})
        raise ExportError(
            f"no completed run of {which} has the selection metric {metric!r}"
            f"{' (' + source + ')' if source else ''}; their metrics: "
            f"{', '.join(have) or 'none'}; name one of them, or pick a run with --run"
        )
    # newest first in `found`: on a tie, the earlier (newer) entry wins
    ordered = [
        (value if goal == "max" else -value, -index, run)
        for index, (value, run) in enumerate(scored)
    ]
    _score, _newest, best = max(ordered, key=lambda item: (item[0], item[1]))
    value = metric_value(best.metrics, metric)
    highest = "highest" if goal == "max" else "lowest"
    named = f", from {source}" if source else ""
    return Selection(
        best,
        f"the best of {len(scored)} completed run(s) of {which}: {highest} {metric} "
        f"({value:.4g}{named})",
        metric,
        goal,
    )
