"""The public API is exactly `mlbook.__all__`, sorted, and every name resolves."""

from __future__ import annotations

import mlbook


def test_all_is_sorted_and_resolves() -> None:
    names = [n for n in mlbook.__all__ if n != "__version__"]
    assert names == sorted(names, key=str)
    for name in mlbook.__all__:
        assert getattr(mlbook, name) is not None


def test_lazy_table_matches_all() -> None:
    lazy = set(mlbook._LAZY)
    assert lazy == set(mlbook.__all__) - {"__version__"}


def test_unknown_attribute() -> None:
    try:
        mlbook.does_not_exist  # noqa: B018
    except AttributeError as exc:
        assert "does_not_exist" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
