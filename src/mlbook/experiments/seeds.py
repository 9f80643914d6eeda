"""Seeds the runner owns: which seed a run gets, and applying it in the child.

A run's seed is, first found: the version's ``seed`` param (``Experiment(seed=N)``
makes it the param of every version that sets none, so a grid can vary it), then
``[experiments] seed`` in ``mlbook.toml`` (the runner adds it to the run's params).
With neither, the run is not seeded, and ``mlbook diff`` says so when two such
runs disagree. The seed is recorded with the run as its ``seed`` param.

The child applies it after importing the script and *before* the model hook
(:func:`seed_run`), so the initial weights are part of what the seed fixes:

- ``PYTHONHASHSEED`` (and ``CUBLAS_WORKSPACE_CONFIG``) are set by the backend in
  the child's environment (:func:`seed_env`): hashing is fixed when the
  interpreter starts, not later;
- Python's ``random``;
- NumPy's global generator and torch (``manual_seed``, deterministic algorithms
  with ``warn_only=True``, cuDNN deterministic and not benchmarking), each when
  the script imports it: already imported modules are seeded at once, and a
  later import (``import torch`` inside a hook) is seeded right after it loads,
  so a script that never imports torch neither pays for it nor records it.

What was applied is written to ``seed.json`` in the run's directory (seed, hash
seed, which generators, torch's CPU threads when torch is loaded), which
``mlbook diff`` reads to name why two identical runs differ.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from mlbook.errors import ExperimentError

if TYPE_CHECKING:
    import importlib.abc
    import importlib.machinery

    from mlbook.experiments.contract import RunSpec

__all__ = [
    "MAX_SEED",
    "SEED_FILE",
    "applied_seed",
    "apply_seed",
    "check_seed",
    "run_seed",
    "seed_env",
    "seed_run",
]

#: The largest seed (NumPy's global generator takes 0 .. 2**32 - 1).
MAX_SEED = 2**32 - 1
#: What the child applied, in the run's directory.
SEED_FILE = "seed.json"
#: Torch Inductor's settings, told to be deterministic when the script loads them.
_INDUCTOR_CONFIG = "torch._inductor.config"
#: Generators seeded when their module is (or gets) imported (Inductor's settings too).
_LIBRARIES = ("numpy", "torch", _INDUCTOR_CONFIG)
_applied: list[int] = []  # the seed apply_seed used in this process, if any


def check_seed(value: Any, where: str) -> int:
    """``value`` as a seed, or one :class:`ExperimentError` line naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExperimentError(
            f"{where}: the seed must be an int from 0 to {MAX_SEED}, got {value!r}; "
            "write a whole number such as 0"
        )
    if not 0 <= value <= MAX_SEED:
        raise ExperimentError(
            f"{where}: the seed must be an int from 0 to {MAX_SEED}, got {value}; pick one in range"
        )
    return int(value)


def run_seed(params: Mapping[str, Any], default: int | None, where: str) -> int | None:
    """The seed of a run with ``params``: its ``seed`` param, else ``default`` (the config's).

    Raises:
        ExperimentError: the ``seed`` param is not an int in range (``where`` names the version).
    """
    if "seed" in params:
        return check_seed(params["seed"], f"{where}: param seed")
    return default


def seed_env(seed: int | None) -> dict[str, str]:
    """Environment variables the child process needs before it starts (none without a seed)."""
    if seed is None:
        return {}
    return {"PYTHONHASHSEED": str(seed), "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def seed_run(spec: RunSpec) -> None:
    """The child's one call, before the script or its model hook runs: apply
    ``spec.seed``, if any (recorded in the run's ``seed.json``)."""
    if spec.seed is None:
        return
    apply_seed(spec.seed, Path(spec.dir) / SEED_FILE)


def applied_seed() -> int | None:
    """The seed :func:`apply_seed` used in this process (the runner's, in a run), or ``None``."""
    return _applied[-1] if _applied else None


def apply_seed(seed: int, record: Path | None = None) -> dict[str, Any]:
    """Seed ``random``, and NumPy and torch now or when they are imported.

    Args:
        seed: the seed (see :func:`check_seed`).
        record: where to write what was applied (``seed.json``), or ``None``.

    Returns:
        what was applied (the content of ``record``).
    """
    seed = check_seed(seed, "apply_seed")
    _applied.append(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    state: dict[str, Any] = {
        "seed": seed,
        "python_hash_seed": os.environ.get("PYTHONHASHSEED"),
        "seeded": ["random"],
        "deterministic": None,
        "threads": None,
        "cpu_count": os.cpu_count(),
        "env": {k: os.environ[k] for k in _THREAD_ENV if k in os.environ},
    }
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _SeedOnImport)]
    pending = []
    for name in _LIBRARIES:
        module = sys.modules.get(name)
        if module is not None:
            _seed_library(name, module, seed, state)
        else:
            pending.append(name)
    if pending:
        sys.meta_path.insert(0, _SeedOnImport(seed, pending, state, record))
    _write(record, state)
    return state


_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _seed_library(name: str, module: ModuleType, seed: int, state: dict[str, Any]) -> None:
    if name == "numpy":
        module.random.seed(seed)
    elif name == "torch":
        module.manual_seed(seed)  # CPU and every CUDA device
        with contextlib.suppress(AttributeError, RuntimeError):
            _deterministic(module)
            state["deterministic"] = "warn_only"
        with contextlib.suppress(AttributeError):
            module.backends.cudnn.deterministic = True
            module.backends.cudnn.benchmark = False
        with contextlib.suppress(AttributeError, RuntimeError):
            state["threads"] = int(module.get_num_threads())
    elif name == _INDUCTOR_CONFIG:
        cast("Any", module).deterministic = True  # what use_deterministic_algorithms sets
        return
    if name not in state["seeded"]:
        state["seeded"].append(name)


def _deterministic(torch: ModuleType) -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` without its import of
    ``torch._inductor.config`` (1.1-1.4 s on this machine's torch 2.13): the eager flag
    now, Inductor's own flag when (if ever) the script loads Inductor."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # another torch: the public call, whatever it imports
        torch.use_deterministic_algorithms(True, warn_only=True)
        return
    setter(True, warn_only=True)
    config = sys.modules.get(_INDUCTOR_CONFIG)
    if config is not None:
        cast("Any", config).deterministic = True


def _write(record: Path | None, state: dict[str, Any]) -> None:
    if record is None:
        return
    import json

    from mlbook._fs import atomic_write_text

    with contextlib.suppress(OSError):  # a side record: never fails the run
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, json.dumps(state, indent=2) + "\n")


class _SeedOnImport:
    """Seeds NumPy or torch right after the script first imports it (a ``sys.meta_path``
    finder; no ``importlib.abc`` base, whose import costs a run 15 ms)."""

    def __init__(
        self, seed: int, names: Sequence[str], state: dict[str, Any], record: Path | None
    ) -> None:
        self.seed = seed
        self.pending = set(names)
        self.state = state
        self.record = record

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.pending:
            return None
        spec = None
        for finder in sys.meta_path:
            if isinstance(finder, _SeedOnImport) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = cast("importlib.abc.Loader", _SeedingLoader(spec.loader, self))
        return spec

    def loaded(self, name: str, module: ModuleType) -> None:
        self.pending.discard(name)
        if not self.pending:
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self)
        _seed_library(name, module, self.seed, self.state)
        _write(self.record, self.state)


class _SeedingLoader:
    """The real loader, then the seed; the module keeps the real loader as its own."""

    def __init__(self, loader: Any, finder: _SeedOnImport) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        created: ModuleType | None = self._loader.create_module(spec)
        return created

    def exec_module(self, module: ModuleType) -> None:
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        module.__loader__ = self._loader
        self._loader.exec_module(module)
        self._finder.loaded(module.__name__, module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)
