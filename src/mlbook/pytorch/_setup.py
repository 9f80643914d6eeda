"""Seeds, device and the once-per-run record of a run's setup (``setup.json``)."""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from mlbook._fs import atomic_write_text

if TYPE_CHECKING:
    from mlbook.experiments.run import Run

__all__ = ["count_parameters", "seed_everything", "setup"]

_SETUP_FILE = "setup.json"
_SETUP_DONE = "_mlbook_pytorch_setup"


def seed_everything(seed: int, *, deterministic: bool = False) -> int:
    """Seed Python's ``random``, NumPy (when installed) and torch (CPU and CUDA).

    With ``deterministic``, torch also uses deterministic algorithms only. Returns ``seed``.
    """
    seed = int(seed)
    random.seed(seed)
    if "numpy" in sys.modules or _has_numpy():
        import numpy as np

        np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
    return seed


def _has_numpy() -> bool:
    import importlib.util

    return importlib.util.find_spec("numpy") is not None


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """The number of parameters of ``model`` (only those that require grad, if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def setup(
    run: Run,
    model: torch.nn.Module | None = None,
    *,
    seed: int | None = None,
    device: str | torch.device | None = None,
    threads: int | None = None,
    deterministic: bool = False,
) -> torch.device:
    """Prepare a run for training and record how, once per run.

    Without ``seed`` it keeps the seeding the runner did before the model hook
    (the run's ``seed``, see :mod:`mlbook.experiments.seeds`); an unseeded run is
    seeded with ``run.params.seed`` or 0. With ``seed`` it seeds ``random``,
    NumPy and torch again. Sets torch's CPU threads when ``threads`` is given,
    picks the device (CUDA when available unless ``device`` says otherwise) and
    moves ``model`` to it. Writes
    ``setup.json`` in the run directory (hyper-parameters, seed, parameter counts,
    device, threads, torch version), records it as an artifact of kind ``setup``
    and prints one summary line. A second call in the same run changes the seed
    and device but writes nothing again.

    Returns:
        the device the model is on.
    """
    from mlbook.experiments.seeds import applied_seed

    runner_seed = applied_seed()  # the runner's, in a run it seeded: the run's seed param
    if seed is not None or runner_seed is None or run.params.get("seed") != runner_seed:
        chosen = seed if seed is not None else int(run.params.get("seed", 0))
        seed_everything(chosen, deterministic=deterministic)
    else:
        chosen = runner_seed
        if deterministic:
            torch.use_deterministic_algorithms(True)
    if threads is not None:
        torch.set_num_threads(int(threads))
    target = torch.device(device) if device is not None else _default_device()
    if model is not None:
        model.to(target)
    if getattr(run, _SETUP_DONE, False):
        return target
    info: dict[str, Any] = {
        "experiment": run.experiment,
        "version": run.version,
        "run": run.id,
        "params": _jsonable(run.params.to_dict()),
        "seed": chosen,
        "device": str(target),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "deterministic": deterministic,
    }
    if model is not None:
        info["model"] = type(model).__name__
        info["parameters"] = count_parameters(model)
        info["trainable_parameters"] = count_parameters(model, trainable_only=True)
    path = run.path(_SETUP_FILE)
    atomic_write_text(path, json.dumps(info, indent=2) + "\n")
    run.artifact(path, kind="setup")
    setattr(run, _SETUP_DONE, True)
    shown = f"{info['parameters']:,} parameters, " if model is not None else ""
    print(
        f"[mlbook] {run.experiment}/{run.version}: {shown}device {target}, seed {chosen}, "
        f"{info['threads']} threads, params {json.dumps(info['params'], sort_keys=True)}",
        flush=True,
    )
    return target


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        if isinstance(value, Mapping):
            return {str(k): _jsonable(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_jsonable(v) for v in value]
        return repr(value)
    return value
