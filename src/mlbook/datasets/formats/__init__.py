"""Dataset formats: one module per format, each with ``detect``, ``read`` and ``write``.

See :mod:`mlbook.datasets.registry` for the name -> module table.
"""
