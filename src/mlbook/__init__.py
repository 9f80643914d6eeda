"""mlbook: a practitioner's habits for ML projects, turned into software.

The public API is what ``__all__`` lists. Importing mlbook is cheap: heavy
modules (and every optional framework) load only when an attribute needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlbook._lazy import lazy_getattr
from mlbook._version import __version__

if TYPE_CHECKING:
    from mlbook._active import artifact, current_run, iterate, log, log_params
    from mlbook.boundaries import CheckReport, Violation, check_project
    from mlbook.config import Config
    from mlbook.datasets import (
        Box,
        ClassEncoding,
        Dataset,
        Record,
        convert,
        open_dataset,
        validate_dataset,
    )
    from mlbook.deploy.loader import load
    from mlbook.errors import (
        ConfigError,
        DatasetError,
        ExperimentError,
        ExportError,
        MlbookError,
        ProjectError,
        ProvenanceError,
        RecordError,
        StoreError,
        TransferError,
    )
    from mlbook.experiments.api import Experiment
    from mlbook.experiments.query import runs
    from mlbook.project import Project, find_root
    from mlbook.scaffold import InitResult, init_project

__all__ = [
    "Box",
    "CheckReport",
    "ClassEncoding",
    "Config",
    "ConfigError",
    "Dataset",
    "DatasetError",
    "Experiment",
    "ExperimentError",
    "ExportError",
    "InitResult",
    "MlbookError",
    "Project",
    "ProjectError",
    "ProvenanceError",
    "Record",
    "RecordError",
    "StoreError",
    "TransferError",
    "Violation",
    "__version__",
    "artifact",
    "check_project",
    "convert",
    "current_run",
    "find_root",
    "init_project",
    "iterate",
    "load",
    "log",
    "log_params",
    "open_dataset",
    "runs",
    "validate_dataset",
]

# public name -> module that defines it; imported on first access
_LAZY: dict[str, str] = {
    "artifact": "mlbook._active",
    "current_run": "mlbook._active",
    "iterate": "mlbook._active",
    "log": "mlbook._active",
    "log_params": "mlbook._active",
    "CheckReport": "mlbook.boundaries",
    "Violation": "mlbook.boundaries",
    "check_project": "mlbook.boundaries",
    "Config": "mlbook.config",
    "ConfigError": "mlbook.errors",
    "DatasetError": "mlbook.errors",
    "ExperimentError": "mlbook.errors",
    "ExportError": "mlbook.errors",
    "MlbookError": "mlbook.errors",
    "ProjectError": "mlbook.errors",
    "ProvenanceError": "mlbook.errors",
    "RecordError": "mlbook.errors",
    "StoreError": "mlbook.errors",
    "TransferError": "mlbook.errors",
    "Experiment": "mlbook.experiments.api",
    "runs": "mlbook.experiments.query",
    "Project": "mlbook.project",
    "find_root": "mlbook.project",
    "InitResult": "mlbook.scaffold",
    "init_project": "mlbook.scaffold",
    "Box": "mlbook.datasets",
    "ClassEncoding": "mlbook.datasets",
    "Dataset": "mlbook.datasets",
    "Record": "mlbook.datasets",
    "open_dataset": "mlbook.datasets",
    "convert": "mlbook.datasets",
    "load": "mlbook.deploy.loader",
    "validate_dataset": "mlbook.datasets",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
