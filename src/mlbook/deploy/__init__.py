"""Export and deployment: verified bundles, :func:`load`, ONNX, listing and serving.

``export_run`` writes a bundle, ``load`` rebuilds its model for deployment code,
``list_exports`` lists bundles, and :mod:`mlbook.deploy.serve` puts one behind HTTP.
Importing this package imports nothing heavy.
"""

from __future__ import annotations

from mlbook.deploy.bundle import ExportResult, export_run
from mlbook.deploy.listing import ExportInfo, list_exports
from mlbook.deploy.loader import LoadedModel, load

__all__ = ["ExportInfo", "ExportResult", "LoadedModel", "export_run", "list_exports", "load"]
