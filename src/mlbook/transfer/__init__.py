"""Runs that travel: packs between clones, pull and push over ssh, MLflow history imported.

:func:`pack_runs` writes finished runs (rows, metric series, commits, outputs)
into one signed file; :func:`unpack` adds them to another clone, all or nothing
and idempotently; :func:`pull` and :func:`push` do both over ssh (or between
two local clones); :func:`import_mlflow` turns an MLflow tracking store's runs
into mlbook runs. Importing this package loads nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlbook._lazy import lazy_getattr

if TYPE_CHECKING:
    from mlbook.transfer.mlflow_import import MlflowImportResult, import_mlflow
    from mlbook.transfer.pack import PackResult, pack_runs
    from mlbook.transfer.remote import pull, push
    from mlbook.transfer.unpack import UnpackResult, unpack

__all__ = [
    "MlflowImportResult",
    "PackResult",
    "UnpackResult",
    "import_mlflow",
    "pack_runs",
    "pull",
    "push",
    "unpack",
]

_LAZY: dict[str, str] = {
    "MlflowImportResult": "mlbook.transfer.mlflow_import",
    "import_mlflow": "mlbook.transfer.mlflow_import",
    "PackResult": "mlbook.transfer.pack",
    "pack_runs": "mlbook.transfer.pack",
    "pull": "mlbook.transfer.remote",
    "push": "mlbook.transfer.remote",
    "UnpackResult": "mlbook.transfer.unpack",
    "unpack": "mlbook.transfer.unpack",
}

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
