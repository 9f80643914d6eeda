"""JSON for the charts: downsampled curves, and params with one metric for parallel coordinates."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from mlbook.errors import ExperimentError
from mlbook.experiments import query
from mlbook.experiments.curves import curves
from mlbook.ui.app import state_of
from mlbook.ui.filters import split_filters
from mlbook.ui.pages import _list

__all__ = ["MAX_PARALLEL_RUNS", "curves_data", "parallel_data"]

MAX_PARALLEL_RUNS = 10_000
_MAX_CURVES = 200


class JSON(Response):
    """A JSON response encoded by orjson (NaN and ±inf become null)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError as exc:
        raise ExperimentError(f"{name}={raw!r}: expected a whole number") from exc


def curves_data(request: Request) -> Response:
    """``GET /api/curves?runs=A,B&keys=loss,acc&x=step&buckets=800``.

    ``buckets`` is the chart's width in pixels: each series comes back with at most
    that many points plus each bucket's min and max.
    """
    runs, keys = _list(request, "runs"), _list(request, "keys")
    if len(runs) * len(keys) > _MAX_CURVES:
        raise ExperimentError(
            f"{len(runs)} runs x {len(keys)} metrics is more than {_MAX_CURVES} curves;"
            " pick fewer runs or metrics"
        )
    x = request.query_params.get("x", "step")
    if x not in ("step", "time"):
        raise ExperimentError(f"x axis {x!r}: use step or time")
    found = curves(
        state_of(request).project,
        runs,
        keys,
        buckets=min(max(_int(request, "buckets", 1000), 1), 4000),
        x="time" if x == "time" else "step",
    )
    return JSON({"curves": [c.to_dict() for c in found]})


def parallel_data(request: Request) -> Response:
    """``GET /api/parallel?q=FILTERS&metric=acc``: each matching run's params and metric."""
    filters = split_filters(request.query_params.get("q", ""))
    metric = request.query_params.get("metric", "")
    found = query.runs(state_of(request).project, filters=filters, limit=MAX_PARALLEL_RUNS + 1)
    rows = []
    names: dict[str, None] = {}
    for record in found[:MAX_PARALLEL_RUNS]:
        params = {k: v for k, v in record.params.items() if isinstance(v, int | float | str | bool)}
        names.update(dict.fromkeys(params))
        value = record.metrics.get(metric) if metric else None
        rows.append(
            {
                "id": record.id,
                "label": f"{record.experiment}/{record.version}",
                "status": record.status,
                "params": params,
                "value": value if isinstance(value, int | float) else None,
            }
        )
    return JSON(
        {
            "params": sorted(names),
            "metric": metric,
            "runs": rows,
            "truncated": len(found) > MAX_PARALLEL_RUNS,
        }
    )
