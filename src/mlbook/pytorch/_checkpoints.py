"""Checkpoints of a run: atomic files, an index, keep_last/keep_best cleanup, resume.

A checkpoint is ``checkpoints/step-<step>.pt`` in the run's directory (see
:func:`save_checkpoint`); ``checkpoints/index.json`` caches each file's metrics,
size and sha256 so that cleanup never opens or re-reads checkpoints.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import random
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from mlbook._fs import atomic_writer
from mlbook.errors import ExperimentError

if TYPE_CHECKING:
    from mlbook.experiments.run import Run

__all__ = [
    "CHECKPOINT_DIR",
    "DELETED_KIND",
    "FORMAT",
    "Checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "resume_from",
    "save_checkpoint",
]

CHECKPOINT_DIR = "checkpoints"
FORMAT = "mlbook.pytorch/1"
DELETED_KIND = "checkpoint-deleted"
_INDEX = "index.json"

Mode = Literal["max", "min"]
Which = Literal["latest", "best"]


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint file: where it is, its step and the metrics saved with it."""

    path: Path
    step: int
    metrics: dict[str, float] = field(default_factory=dict)


def _checkpoint_dir(directory: Path) -> Path:
    return directory / CHECKPOINT_DIR


def _file_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def _step_of(path: Path) -> int | None:
    stem = path.stem
    if not stem.startswith("step-"):
        return None
    try:
        return int(stem[5:])
    except ValueError:
        return None


def _numbers(value: Any) -> dict[str, float] | None:
    """``value`` as a metrics dict when it is one (numbers only), else ``None``."""
    if not isinstance(value, dict):
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()):
        return None
    return {str(k): float(v) for k, v in value.items()}


def _read_index(folder: Path) -> dict[str, dict[str, Any]]:
    """``index.json``: file name -> ``{"metrics": {...}, "sha256": ..., "size": ...}``.

    A missing, unreadable or hand-edited index is never an error: entries that do
    not have the expected shape are dropped, and the metrics are read from the
    checkpoint files instead.
    """
    try:
        data = json.loads((folder / _INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    index: dict[str, dict[str, Any]] = {}
    for name, entry in data.items():
        if not isinstance(entry, dict):
            continue
        metrics = _numbers(entry.get("metrics"))
        if metrics is None:
            continue
        clean: dict[str, Any] = {"metrics": metrics}
        digest, size = entry.get("sha256"), entry.get("size")
        if isinstance(digest, str) and isinstance(size, int) and not isinstance(size, bool):
            clean.update(sha256=digest, size=size)
        index[str(name)] = clean
    return index


def _scan(folder: Path, index: Mapping[str, Mapping[str, Any]]) -> list[Checkpoint]:
    found: list[Checkpoint] = []
    for path in folder.glob("step-*.pt"):
        step = _step_of(path)
        if step is None:
            continue
        entry = index.get(path.name)
        metrics = dict(entry["metrics"]) if entry is not None else _metrics_inside(path)
        found.append(Checkpoint(path=path, step=step, metrics=metrics))
    return sorted(found, key=lambda c: c.step)


def list_checkpoints(directory: Path | str) -> list[Checkpoint]:
    """The checkpoints in ``directory/checkpoints/`` (a run directory), oldest step first.

    Metrics come from the index; a checkpoint missing from it (a crash between
    writing the file and the index) is listed with the metrics stored inside it.
    """
    folder = _checkpoint_dir(Path(directory))
    if not folder.is_dir():
        return []
    return _scan(folder, _read_index(folder))


def _torch_load(path: Path, map_location: str | torch.device | None = "cpu") -> Any:
    """``torch.load`` safely (tensors and plain types); objects only from ``extra=``."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # save_checkpoint(extra=...) may hold any picklable object; the run wrote it
        return torch.load(path, map_location=map_location, weights_only=False)


def _metrics_inside(path: Path) -> dict[str, float]:
    try:
        state = _torch_load(path)
    except Exception:
        return {}
    metrics = _numbers(state.get("metrics")) if isinstance(state, dict) else None
    return metrics or {}


def _clean_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    clean: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        try:
            clean[str(key)] = float(value)
        except (TypeError, ValueError) as exc:
            raise ExperimentError(
                f"save_checkpoint: metric {key!r} = {value!r} is not a number; "
                "pass numbers (floats, ints, 0-d tensors)"
            ) from exc
    return clean


def _best(checkpoints: list[Checkpoint], key: str, mode: Mode) -> Checkpoint | None:
    best: Checkpoint | None = None
    for checkpoint in checkpoints:
        value = checkpoint.metrics.get(key)
        if value is None or value != value:  # missing or NaN: never the best
            continue
        if best is None:
            best = checkpoint
            continue
        current = best.metrics[key]
        if (mode == "max" and value > current) or (mode == "min" and value < current):
            best = checkpoint
    return best


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


def save_checkpoint(
    run: Run,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    step: int,
    metrics: Mapping[str, Any] | None = None,
    keep_last: int | None = None,
    keep_best: str | None = None,
    mode: Mode = "max",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Save the model, optimizer, step, metrics and RNG states as ``checkpoints/step-<step>.pt``.

    The file is written atomically and recorded as an artifact (kind ``checkpoint``).
    Then older checkpoints are deleted:

    - ``keep_last=N`` keeps the ``N`` newest (the one just written counts);
    - ``keep_best="acc"`` also keeps the one with the best ``acc`` (``mode`` ``max``
      or ``min``); with ``keep_best`` alone, ``keep_last`` defaults to 1;
    - neither: nothing is deleted.

    The checkpoint just written and the best one are never deleted.

    Args:
        run: the run (checkpoints go to ``run.dir/checkpoints/``).
        model: the module whose ``state_dict`` is saved.
        optimizer: its optimizer, saved too so that a resume continues exactly.
        step: the step (epoch) this checkpoint ends; names the file.
        metrics: numbers to keep with it (what ``keep_best`` compares).
        extra: anything else to store (a scheduler's state, ...), picklable.

    Returns:
        the path written.

    Raises:
        ExperimentError: a bad ``keep_last``, ``mode`` or step, or a metric that is not a number.
    """
    if keep_last is not None and keep_last < 1:
        raise ExperimentError(f"save_checkpoint: keep_last must be at least 1, got {keep_last}")
    if mode not in ("max", "min"):
        raise ExperimentError(f"save_checkpoint: mode must be 'max' or 'min', got {mode!r}")
    if int(step) < 0:
        raise ExperimentError(f"save_checkpoint: step must be 0 or more, got {step}")
    step = int(step)
    values = _clean_metrics(metrics)
    folder = _checkpoint_dir(run.dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / _file_name(step)
    state: dict[str, Any] = {
        "format": FORMAT,
        "step": step,
        "metrics": values,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": _rng_state(),
        "run": run.id,
        "extra": dict(extra or {}),
    }
    with atomic_writer(target) as handle:
        hashing = _HashingWriter(handle)
        torch.save(state, hashing)  # type: ignore[arg-type]  # write() + flush() suffice
    index = _read_index(folder)
    index[target.name] = {"metrics": values, "sha256": hashing.hexdigest(), "size": hashing.size}
    _record(run, target, "checkpoint", hashing.hexdigest())
    if keep_last is not None or keep_best is not None:
        for old in _removable(folder, index, target, keep_last or 1, keep_best, mode):
            entry = index.pop(old.name, {})
            if "sha256" in entry:
                _record(run, old, DELETED_KIND, str(entry["sha256"]))
            else:
                with contextlib.suppress(ExperimentError):  # gone already
                    run.artifact(old, kind=DELETED_KIND)
            old.unlink(missing_ok=True)
    _write_index(folder, index)
    return target


class _HashingWriter:
    """A binary file wrapper that computes the sha256 and size of what goes through it."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        self._digest.update(data)
        self.size += len(memoryview(data).cast("B"))
        written: int = self._handle.write(data)
        return written

    def flush(self) -> None:
        self._handle.flush()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _record(run: Run, path: Path, kind: str, digest: str) -> None:
    """Record an artifact whose sha256 is known (no second read of a big file)."""
    if run.is_test:
        return
    run.artifact(path, kind=kind, sha256=digest)


def _write_index(folder: Path, index: dict[str, dict[str, Any]]) -> None:
    """Replace ``index.json`` atomically; no fsync: it is a cache of what the files hold.

    After a power loss the index may be empty or old; :func:`_read_index` then
    gives ``{}`` or stale entries, and :func:`_scan` reads the metrics from the
    checkpoints themselves (which are fsynced).
    """
    present = {name: entry for name, entry in index.items() if (folder / name).is_file()}
    data = json.dumps(dict(sorted(present.items())), indent=1) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{_INDEX}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
        os.replace(tmp, folder / _INDEX)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _removable(
    folder: Path,
    index: Mapping[str, Mapping[str, Any]],
    current: Path,
    keep_last: int,
    keep_best: str | None,
    mode: Mode,
) -> list[Path]:
    """The checkpoint files cleanup may delete: not the current one, the newest or the best."""
    checkpoints = _scan(folder, index)
    keep = {current.name}
    keep.update(c.path.name for c in checkpoints[-keep_last:])
    if keep_best is not None:
        best = _best(checkpoints, keep_best, mode)
        if best is not None:
            keep.add(best.path.name)
    return [c.path for c in checkpoints if c.path.name not in keep]


def _pick(run: Run, which: Which | str | Path, key: str | None, mode: Mode) -> Checkpoint | None:
    """The checkpoint to load: a path, or the latest/best of this run, else of the resumed run."""
    if isinstance(which, Path) or which not in ("latest", "best"):
        path = Path(which)
        if not path.is_absolute():
            path = run.dir / path
        if not path.is_file():
            raise ExperimentError(f"load_checkpoint: no checkpoint file {path}")
        return Checkpoint(path=path, step=_step_of(path) or 0, metrics=_metrics_inside(path))
    for directory in (run.dir, run.resume_dir):
        if directory is None:
            continue
        found = list_checkpoints(directory)
        if not found:
            continue
        if which == "latest":
            return found[-1]
        if key is None:
            raise ExperimentError(
                "load_checkpoint(which='best') needs key='acc' (the metric to compare)"
            )
        best = _best(found, key, mode)
        if best is None:
            raise ExperimentError(
                f"load_checkpoint: no checkpoint in {directory / CHECKPOINT_DIR} has metric "
                f"{key!r}; pass metrics={{{key!r}: ...}} to save_checkpoint"
            )
        return best
    return None


def load_checkpoint(
    run: Run,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    which: Which | str | Path = "latest",
    key: str | None = None,
    mode: Mode = "max",
    restore_rng: bool = True,
    map_location: str | torch.device | None = "cpu",
) -> Checkpoint | None:
    """Load a checkpoint into ``model`` (and ``optimizer``); ``None`` when there is none.

    Looks in this run's ``checkpoints/`` first, then in the run being resumed
    (``mlbook run --resume RUN`` sets ``run.resume_dir``).

    Args:
        which: ``"latest"`` (highest step), ``"best"`` (by ``key`` and ``mode``), or
            a checkpoint file (relative paths are inside the run directory).
        restore_rng: also restore the random number generators saved with it, so
            that a resumed run continues as the uninterrupted one would have.

    Raises:
        ExperimentError: a file that is not an mlbook checkpoint, or ``best``
            without a metric to compare.
    """
    chosen = _pick(run, which, key, mode)
    if chosen is None:
        return None
    try:
        state = _torch_load(chosen.path, map_location)
    except Exception as exc:
        raise ExperimentError(f"{chosen.path}: cannot read the checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ExperimentError(
            f"{chosen.path}: not a checkpoint written by mlbook.pytorch.save_checkpoint"
        )
    if not chosen.path.resolve().is_relative_to(run.dir.resolve()):
        from mlbook._fs import sha256_file
        from mlbook.pytorch._weights import warn_if_stale

        warn_if_stale(run, chosen.path, sha256_file(chosen.path))  # an earlier run's weights
    model.load_state_dict(state["model"])
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if restore_rng and isinstance(state.get("rng"), dict):
        _set_rng_state(state["rng"])
    return Checkpoint(path=chosen.path, step=int(state["step"]), metrics=dict(state["metrics"]))


def resume_from(
    run: Run,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    which: Which | str | Path = "latest",
    key: str | None = None,
    mode: Mode = "max",
) -> int:
    """Load the newest (or best) checkpoint and return the step to continue from.

    Returns 0 when there is no checkpoint (a fresh start), else the saved step + 1,
    so ``for epoch in run.iterate(range(start, epochs))`` picks up where it stopped.
    """
    loaded = load_checkpoint(run, model, optimizer, which=which, key=key, mode=mode)
    if loaded is None:
        return 0
    print(f"[mlbook] resumed from {loaded.path.name} (step {loaded.step})", flush=True)
    return loaded.step + 1
