"""Export and deployment: verified bundles, :func:`load`, ONNX, listing and serving.

``export_run`` writes a bundle, ``load`` rebuilds its model for deployment code,
``list_exports`` lists bundles, and :mod:`mlbook.deploy.serve` puts one behind HTTP.
Names load on first use, so ``mlbook.load`` imports only the loader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlbook._lazy import lazy_getattr

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


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
