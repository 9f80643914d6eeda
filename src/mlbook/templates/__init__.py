"""File templates used by ``mlbook init`` and ``mlbook new``."""
