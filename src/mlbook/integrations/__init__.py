"""Optional framework integrations, one module per framework, each imported on its own.

- :mod:`mlbook.integrations.lightning`: ``MlbookLogger`` for a PyTorch Lightning
  ``Trainer`` (extra ``mlbook[lightning]``).
- :mod:`mlbook.integrations.sklearn`: ``autolog()`` for scikit-learn (extra
  ``mlbook[torch]`` carries scikit-learn).

Importing this package imports neither framework.
"""

from __future__ import annotations

__all__: list[str] = []
