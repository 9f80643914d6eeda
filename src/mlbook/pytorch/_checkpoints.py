"""The PyTorch side of checkpoints: what a ``step-<step>.pt`` file holds and how it loads.

The API (``save_checkpoint``, ``load_checkpoint``, ``resume_from``, the index and
the cleanup) is :mod:`mlbook.experiments.checkpoints`, shared with checkpoints of
other objects; this module writes and reads the torch payload: the model's and the
optimizer's state, the step, the metrics, the random number generator states and
``extra``. Everything but ``extra`` is tensors and plain values, so it loads with
``torch.load(weights_only=True)``; an ``extra`` holding other objects is unpickled
only after its sha256 matches the checkpoint index.
"""

from __future__ import annotations

import io
import pickle
import random
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mlbook.errors import ExperimentError
from mlbook.experiments.checkpoints import Checkpoint, read_verified

if TYPE_CHECKING:
    from mlbook.experiments.run import Run

__all__ = ["FORMAT", "load_torch", "read_metrics", "torch_writer"]

FORMAT = "mlbook.pytorch/1"


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if "numpy" in sys.modules:
        import numpy as np

        saved: Any = np.random.get_state(legacy=True)
        name, keys, position, has_gauss, gauss = saved
        # plain types and a tensor, so that torch.load(weights_only=True) reads it
        keys_tensor = torch.from_numpy(np.asarray(keys).astype(np.int64))
        state["numpy"] = (str(name), keys_tensor, int(position), int(has_gauss), float(gauss))
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    if "python" in state:
        random.setstate(state["python"])
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        name, keys, position, has_gauss, gauss = state["numpy"]
        keys_array = keys.numpy().astype(np.uint32) if isinstance(keys, torch.Tensor) else keys
        np.random.set_state((name, keys_array, position, has_gauss, gauss))


def torch_writer(
    run: Run,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    metrics: dict[str, float],
    extra: dict[str, Any],
) -> Callable[[Any], None]:
    """A function that writes the checkpoint of ``model`` to a binary file handle."""
    state: dict[str, Any] = {
        "format": FORMAT,
        "step": step,
        "metrics": metrics,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": _rng_state(),
        "run": run.id,
        "extra": extra,
    }

    def write(handle: Any) -> None:
        torch.save(state, handle)

    return write


def _safe_load(source: Path | io.BytesIO, map_location: Any) -> Any:
    return torch.load(source, map_location=map_location, weights_only=True)


def read_metrics(path: Path) -> dict[str, float]:
    """The metrics inside a torch checkpoint (``{}`` when it cannot be read safely)."""
    try:
        state = _safe_load(path, "cpu")
    except Exception:
        return {}
    metrics = state.get("metrics") if isinstance(state, dict) else None
    if not isinstance(metrics, dict):
        return {}
    try:
        return {str(k): float(v) for k, v in metrics.items()}
    except (TypeError, ValueError):
        return {}


def _read(run: Run, path: Path, map_location: Any) -> Any:
    """The checkpoint's content: ``weights_only=True``, or the verified bytes unpickled."""
    try:
        return _safe_load(path, map_location)
    except pickle.UnpicklingError:
        pass  # extra= holds objects torch's safe loader refuses
    except Exception as exc:
        raise ExperimentError(f"{path}: cannot read the checkpoint ({exc})") from exc
    try:
        data = read_verified(run, path)
    except ExperimentError as exc:
        raise ExperimentError(
            f"{exc} (it holds more than the tensors and plain values torch's safe loader reads)"
        ) from exc
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
    except Exception as exc:
        raise ExperimentError(f"{path}: cannot read the checkpoint ({exc})") from exc


def load_torch(
    run: Run,
    path: Path,
    model: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer | None,
    restore_rng: bool,
    map_location: Any,
) -> Checkpoint:
    """Read the torch checkpoint ``path``; load it into ``model`` and ``optimizer`` if given."""
    state = _read(run, path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ExperimentError(f"{path}: not a checkpoint written by mlbook's save_checkpoint")
    if not path.resolve().is_relative_to(run.dir.resolve()):
        from mlbook._fs import sha256_file
        from mlbook.pytorch._weights import warn_if_stale

        warn_if_stale(run, path, sha256_file(path))  # an earlier run's weights
    if model is not None:
        model.load_state_dict(state["model"])
        if optimizer is not None and state.get("optimizer") is not None:
            optimizer.load_state_dict(state["optimizer"])
        if restore_rng and isinstance(state.get("rng"), dict):
            _set_rng_state(state["rng"])
    return Checkpoint(
        path=path,
        step=int(state["step"]),
        metrics=dict(state["metrics"]),
        extra=dict(state.get("extra") or {}),
        state=None if model is not None else state["model"],
    )
