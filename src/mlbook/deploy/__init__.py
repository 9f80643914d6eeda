"""Export and deployment: verified bundles, :func:`load`, ONNX, listing and serving.

``export_run`` writes a bundle, ``load`` rebuilds its model for deployment code,
``list_exports`` lists bundles, and :mod:`mlbook.deploy.serve` puts one behind HTTP.
Names load on first use, so ``mlbook.load`` imports only the loader.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlbook.deploy.bundle import ExportResult, export_run
    from mlbook.deploy.listing import ExportInfo, list_exports
    from mlbook.deploy.loader import LoadedModel, load

__all__ = ["ExportInfo", "ExportResult", "LoadedModel", "export_run", "list_exports", "load"]

_LAZY = {
    "ExportResult": "mlbook.deploy.bundle",
    "export_run": "mlbook.deploy.bundle",
    "ExportInfo": "mlbook.deploy.listing",
    "list_exports": "mlbook.deploy.listing",
    "LoadedModel": "mlbook.deploy.loader",
    "load": "mlbook.deploy.loader",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlbook.deploy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
