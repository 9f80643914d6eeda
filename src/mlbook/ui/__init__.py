"""``mlbook ui``: a local web UI over the run store, the journal and the exports.

Needs the ``ui`` extra (Starlette, Jinja2, uvicorn); nothing here is imported by
``import mlbook``. :func:`~mlbook.ui.app.create_app` builds the ASGI app;
:func:`~mlbook.ui.server.serve` runs it.
"""

from __future__ import annotations

from mlbook.ui.app import create_app
from mlbook.ui.server import serve

__all__ = ["create_app", "serve"]
