"""Experiments: scripts with named versions, the runner, the run store and its queries.

Scripts use :class:`Experiment` (and get a :class:`Run` in their hooks); tools
use :func:`run_experiments`, :class:`Store` and :func:`runs`. Importing this
package loads only the small script API; the rest loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlbook._lazy import lazy_getattr
from mlbook.experiments.api import Experiment, Params

if TYPE_CHECKING:
    from mlbook.experiments.discovery import Script, find_scripts, load_experiment, load_script
    from mlbook.experiments.query import (
        RunList,
        RunRecord,
        get_run,
        metric_series,
        metric_summaries,
        run_artifacts,
        run_files,
        runs,
    )
    from mlbook.experiments.run import Run, load_weights
    from mlbook.experiments.runner import (
        RunInfo,
        RunnerResult,
        RunObserver,
        new_experiment,
        run_experiments,
    )
    from mlbook.experiments.store import Store

__all__ = [
    "Experiment",
    "Params",
    "Run",
    "RunInfo",
    "RunList",
    "RunObserver",
    "RunRecord",
    "RunnerResult",
    "Script",
    "Store",
    "find_scripts",
    "get_run",
    "load_experiment",
    "load_script",
    "load_weights",
    "metric_series",
    "metric_summaries",
    "new_experiment",
    "run_artifacts",
    "run_experiments",
    "run_files",
    "runs",
]

_LAZY: dict[str, str] = {
    "Script": "mlbook.experiments.discovery",
    "find_scripts": "mlbook.experiments.discovery",
    "load_experiment": "mlbook.experiments.discovery",
    "load_script": "mlbook.experiments.discovery",
    "RunList": "mlbook.experiments.query",
    "RunRecord": "mlbook.experiments.query",
    "get_run": "mlbook.experiments.query",
    "metric_series": "mlbook.experiments.query",
    "metric_summaries": "mlbook.experiments.query",
    "run_artifacts": "mlbook.experiments.query",
    "run_files": "mlbook.experiments.query",
    "runs": "mlbook.experiments.query",
    "Run": "mlbook.experiments.run",
    "load_weights": "mlbook.experiments.run",
    "RunInfo": "mlbook.experiments.runner",
    "RunObserver": "mlbook.experiments.runner",
    "RunnerResult": "mlbook.experiments.runner",
    "new_experiment": "mlbook.experiments.runner",
    "run_experiments": "mlbook.experiments.runner",
    "Store": "mlbook.experiments.store",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
