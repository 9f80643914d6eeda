"""Checkpoints of a run: one API for PyTorch models and for any other object.

``save_checkpoint(run, obj, optimizer=None, *, step, ...)`` writes
``checkpoints/step-<step>.pt`` for a PyTorch model (anything with ``state_dict()``,
see :mod:`mlbook.pytorch._checkpoints`) and ``checkpoints/step-<step>.ckpt`` (a
pickle) for anything else. ``checkpoints/index.json`` records each file's metrics,
size and sha256: cleanup never opens a checkpoint, and a pickle is unpickled only
when its bytes match the sha256 recorded in the index of this run or of the run it
resumes. Torch checkpoints load with ``torch.load(weights_only=True)``; only one
whose ``extra`` holds other objects needs the same sha256 check.

The :class:`~mlbook.experiments.run.Run` methods and ``mlbook.pytorch`` call
these functions: one signature, one return type (:class:`Checkpoint`).
Nothing here imports torch unless a torch checkpoint is written or read.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import operator
import os
import pickle
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from mlbook._fs import atomic_write_bytes, atomic_writer
from mlbook.errors import ExperimentError

if TYPE_CHECKING:
    from mlbook.experiments.run import Run

__all__ = [
    "CHECKPOINT_DIR",
    "DELETED_KIND",
    "INDEX_FILE",
    "Checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "resume_from",
    "save_checkpoint",
]

CHECKPOINT_DIR = "checkpoints"
DELETED_KIND = "checkpoint-deleted"
INDEX_FILE = "index.json"
PICKLE_FORMAT = "mlbook.checkpoint/1"
_SUFFIXES = (".pt", ".ckpt")  # a PyTorch model's checkpoint; any other object's

Mode = Literal["max", "min"]
Which = Literal["latest", "best"]


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint: where it is and what was saved in it.

    Attributes:
        path: the checkpoint file.
        step: the step (epoch) it ends.
        metrics: the numbers saved with it (what ``keep_best`` compares).
        extra: the ``extra`` dict passed to :func:`save_checkpoint`.
        state: the saved object of a non-PyTorch checkpoint; for a PyTorch one the
            model's ``state_dict`` when it was loaded without a model, else ``None``.

    :func:`list_checkpoints` reads only the index: ``extra`` is empty and ``state``
    is ``None`` there; :func:`load_checkpoint` fills them.
    """

    path: Path
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    state: Any = None


def is_module(value: Any) -> bool:
    """True for a PyTorch-style model: something with ``state_dict()`` that is not a dict."""
    return callable(getattr(value, "state_dict", None)) and not isinstance(value, Mapping)


def _folder(directory: Path) -> Path:
    return directory / CHECKPOINT_DIR


def _step_of(path: Path) -> int | None:
    stem = path.stem
    if path.suffix not in _SUFFIXES or not stem.startswith("step-"):
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

    A missing, unreadable or hand-edited index is never an error: entries without
    the expected shape are dropped. Torch checkpoints then have their metrics read
    from the file (safely); a pickle missing from the index cannot be loaded.
    """
    try:
        data = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
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


def _write_index(
    folder: Path, index: Mapping[str, Mapping[str, Any]], pending: str, durable: bool
) -> None:
    """Replace ``index.json`` atomically; fsynced when ``durable``.

    Entries whose file is gone are dropped, except ``pending``: the checkpoint
    about to be renamed into place, which is written into the index first, so a
    checkpoint on disk under its real name is in the index. The index is what a
    pickle is checked against, so a checkpoint that holds one (a non-PyTorch
    object, or an ``extra``) makes it durable; for the rest it is a cache of the
    metrics, which :func:`_scan` can read from the files themselves.
    """
    present = {
        name: dict(entry)
        for name, entry in index.items()
        if name == pending or (folder / name).is_file()
    }
    data = (json.dumps(dict(sorted(present.items())), indent=1) + "\n").encode("utf-8")
    if durable:
        atomic_write_bytes(folder / INDEX_FILE, data)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{INDEX_FILE}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, folder / INDEX_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _metrics_inside(path: Path) -> dict[str, float]:
    """The metrics stored in a torch checkpoint missing from the index (never a pickle)."""
    if path.suffix != ".pt":
        return {}
    try:
        from mlbook.pytorch._checkpoints import read_metrics
    except ImportError:  # no torch: the metrics stay unknown
        return {}
    return read_metrics(path)


def _scan(folder: Path, index: Mapping[str, Mapping[str, Any]]) -> list[Checkpoint]:
    found: list[Checkpoint] = []
    for path in folder.glob("step-*"):
        step = _step_of(path)
        if step is None or not path.is_file():
            continue
        entry = index.get(path.name)
        if entry is not None and entry.get("size") == path.stat().st_size:
            metrics = dict(entry["metrics"])
        else:  # not indexed, or an entry that does not describe this file: read the file
            metrics = _metrics_inside(path)
        found.append(Checkpoint(path=path, step=step, metrics=metrics))
    return sorted(found, key=lambda c: (c.step, c.path.name))


def list_checkpoints(directory: Path | str) -> list[Checkpoint]:
    """The checkpoints in ``directory/checkpoints/`` (a run directory), oldest step first.

    Metrics come from the index; a torch checkpoint missing from it (a crash
    between writing the index and the file) is listed with the metrics inside it.
    """
    folder = _folder(Path(directory))
    if not folder.is_dir():
        return []
    return _scan(folder, _read_index(folder))


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


class _HashingWriter:
    """A binary file wrapper that computes the sha256 and size of what goes through it."""

    def __init__(self, handle: BinaryIO) -> None:
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


def _removable(
    checkpoints: list[Checkpoint],
    current: str,
    keep_last: int,
    keep_best: str | None,
    mode: Mode,
) -> list[Checkpoint]:
    """The checkpoints cleanup may delete: not the current one, the newest or the best."""
    keep = {current}
    keep.update(c.path.name for c in checkpoints[-keep_last:])
    if keep_best is not None:
        best = _best(checkpoints, keep_best, mode)
        if best is not None:
            keep.add(best.path.name)
    return [c for c in checkpoints if c.path.name not in keep]


def save_checkpoint(
    run: Run,
    model: Any,
    optimizer: Any = None,
    *,
    step: int,
    metrics: Mapping[str, Any] | None = None,
    keep_last: int | None = None,
    keep_best: str | None = None,
    mode: Mode = "max",
    extra: Mapping[str, Any] | None = None,
) -> Checkpoint:
    """Save a checkpoint of ``step`` in ``run.dir/checkpoints/`` and clean up older ones.

    A PyTorch model (anything with ``state_dict()``) is saved as
    ``step-<step>.pt``: the model's and the optimizer's state, the step, the
    metrics, the random number generator states and ``extra``. Any other object
    (a dict of arrays, a scikit-learn model...) is pickled as it is, with the step,
    metrics and ``extra``, as ``step-<step>.ckpt``. The file is written atomically,
    entered in ``checkpoints/index.json`` with its sha256, and recorded as an
    artifact (kind ``checkpoint``). Then older checkpoints are deleted:

    - ``keep_last=N`` keeps the ``N`` newest (the one just written counts);
    - ``keep_best="acc"`` also keeps the one with the best ``acc`` (``mode`` ``max``
      or ``min``); with ``keep_best`` alone, ``keep_last`` defaults to 1;
    - neither: nothing is deleted.

    The checkpoint just written and the best one are never deleted.

    Args:
        run: the run (checkpoints go to ``run.dir/checkpoints/``).
        model: a PyTorch model, or any picklable object.
        optimizer: the model's optimizer, saved too so that a resume continues
            exactly (PyTorch models only).
        step: the step (epoch) this checkpoint ends; names the file.
        metrics: numbers to keep with it (what ``keep_best`` compares).
        extra: anything else to store (a scheduler's state, ...), picklable.

    Returns:
        the :class:`Checkpoint` written (``state`` is the object for a non-PyTorch one).

    Raises:
        ExperimentError: a bad ``keep_last``, ``mode`` or step, a metric that is not
            a number, or an optimizer with an object that is not a PyTorch model.
    """
    if keep_last is not None and keep_last < 1:
        raise ExperimentError(f"save_checkpoint: keep_last must be at least 1, got {keep_last}")
    if mode not in ("max", "min"):
        raise ExperimentError(f"save_checkpoint: mode must be 'max' or 'min', got {mode!r}")
    step = _whole_step(step)
    values = _clean_metrics(metrics)
    extras = dict(extra or {})
    torch_model = is_module(model)
    if not torch_model and optimizer is not None:
        raise ExperimentError(
            "save_checkpoint: optimizer= goes with a PyTorch model (an object with "
            f"state_dict()), got {type(model).__name__}; put other state in extra="
        )
    write: Callable[[Any], None]
    if torch_model:
        from mlbook.pytorch._checkpoints import torch_writer

        write = torch_writer(run, model, optimizer, step, values, extras)
    else:
        payload = {
            "format": PICKLE_FORMAT,
            "step": step,
            "metrics": values,
            "run": run.id,
            "extra": extras,
            "state": model,
        }

        def write(handle: Any) -> None:
            pickle.dump(payload, handle, protocol=pickle.HIGHEST_PROTOCOL)

    folder = _folder(run.dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"step-{step:08d}{'.pt' if torch_model else '.ckpt'}"
    index = _read_index(folder)
    removable: list[Checkpoint] = []
    with atomic_writer(target) as handle:
        hashing = _HashingWriter(handle)
        write(hashing)
        index[target.name] = {
            "metrics": values,
            "sha256": hashing.hexdigest(),
            "size": hashing.size,
        }
        if keep_last is not None or keep_best is not None:
            older = [c for c in _scan(folder, index) if c.path.name != target.name]
            current = Checkpoint(path=target, step=step, metrics=values)
            everything = sorted([*older, current], key=lambda c: (c.step, c.path.name))
            removable = _removable(everything, target.name, keep_last or 1, keep_best, mode)
        # the index before the rename (when the block ends): a checkpoint under its real
        # name is in the index; durably when a load will check it (a pickle may be in it)
        durable = not torch_model or bool(extras)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
        _write_index(folder, _without(index, removable), target.name, durable)
    _record(run, target, "checkpoint", hashing.hexdigest())
    for old in removable:
        entry = index.get(old.path.name, {})
        if "sha256" in entry:
            _record(run, old.path, DELETED_KIND, str(entry["sha256"]))
        else:
            with contextlib.suppress(ExperimentError):  # gone already
                run.artifact(old.path, kind=DELETED_KIND)
        old.path.unlink(missing_ok=True)
    return Checkpoint(
        path=target,
        step=step,
        metrics=values,
        extra=extras,
        state=None if torch_model else model,
    )


def _whole_step(step: Any) -> int:
    try:
        number = -1 if isinstance(step, bool) else operator.index(step)
    except TypeError:
        number = -1
    if number < 0:
        raise ExperimentError(
            f"save_checkpoint: step must be a whole number, 0 or more, got {step!r}"
        )
    return number


def _without(
    index: Mapping[str, dict[str, Any]], removed: list[Checkpoint]
) -> dict[str, dict[str, Any]]:
    names = {c.path.name for c in removed}
    return {name: entry for name, entry in index.items() if name not in names}


def _pick(run: Run, which: Which | str | Path, key: str | None, mode: Mode) -> Checkpoint | None:
    """The checkpoint to load: a path, or the latest/best of this run, else of the resumed run."""
    if isinstance(which, Path) or which not in ("latest", "best"):
        path = Path(which)
        if not path.is_absolute():
            path = run.dir / path
        if not path.is_file():
            raise ExperimentError(f"load_checkpoint: no checkpoint file {path}")
        return Checkpoint(path=path, step=_step_of(path) or 0)  # the file has the real step
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


def read_verified(run: Run, path: Path) -> bytes:
    """The bytes of checkpoint ``path`` after checking them against a recorded sha256.

    The file must be in the ``checkpoints/`` of ``run`` or of the run it resumes,
    and listed in that folder's index with the sha256 of exactly these bytes:
    mlbook unpickles only what it wrote and recorded.

    Raises:
        ExperimentError: the file is elsewhere, not indexed, or changed since.
    """
    folder = path.parent.resolve()
    trusted = [_folder(d).resolve() for d in (run.dir, run.resume_dir) if d is not None]
    if folder not in trusted:
        raise ExperimentError(
            f"{path}: not in the checkpoints of this run or of the run it resumes; "
            "mlbook unpickles only checkpoints it recorded there"
        )
    entry = _read_index(folder).get(path.name)
    if entry is None or "sha256" not in entry:
        raise ExperimentError(
            f"{path}: not recorded in {folder / INDEX_FILE}, so it is not unpickled; "
            "save it again with save_checkpoint"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ExperimentError(f"{path}: cannot read the checkpoint ({exc.strerror})") from exc
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ExperimentError(
            f"{path}: its sha256 differs from the one recorded in {folder / INDEX_FILE} when "
            "it was saved; the file changed since, so it is not unpickled"
        )
    return data


def _load_pickle(run: Run, chosen: Checkpoint) -> Checkpoint:
    data = read_verified(run, chosen.path)
    try:
        payload = pickle.load(io.BytesIO(data))
    except Exception as exc:
        raise ExperimentError(f"{chosen.path}: cannot read the checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != PICKLE_FORMAT:
        raise ExperimentError(f"{chosen.path}: not a checkpoint written by save_checkpoint")
    return Checkpoint(
        path=chosen.path,
        step=int(payload["step"]),
        metrics=dict(payload["metrics"]),
        extra=dict(payload["extra"]),
        state=payload["state"],
    )


def load_checkpoint(
    run: Run,
    model: Any = None,
    optimizer: Any = None,
    *,
    which: Which | str | Path = "latest",
    key: str | None = None,
    mode: Mode = "max",
    restore_rng: bool = True,
    map_location: Any = "cpu",
) -> Checkpoint | None:
    """Load a checkpoint; ``None`` when there is none.

    Looks in this run's ``checkpoints/`` first, then in the run being resumed
    (``mlbook run --resume RUN`` sets ``run.resume_dir``). A PyTorch checkpoint is
    loaded into ``model`` (and ``optimizer``); without a model its ``state`` is the
    model's ``state_dict``. A checkpoint of another object is returned with the
    object as ``state`` (pass no model).

    Args:
        model: the PyTorch model to load into, or ``None``.
        optimizer: its optimizer, to load the saved optimizer state into.
        which: ``"latest"`` (highest step), ``"best"`` (by ``key`` and ``mode``), or
            a checkpoint file (relative paths are inside the run directory).
        restore_rng: also restore the random number generators saved with a PyTorch
            checkpoint, so a resumed run continues as the uninterrupted one would have.
        map_location: where torch puts the tensors (``torch.load``'s argument).

    Raises:
        ExperimentError: a file that is not an mlbook checkpoint, one that fails its
            sha256 check, ``best`` without a metric, or a model for a non-PyTorch one.
    """
    if model is not None and not is_module(model):
        raise ExperimentError(
            f"load_checkpoint: model must be a PyTorch model (with load_state_dict), got "
            f"{type(model).__name__}; call load_checkpoint() and use .state for other objects"
        )
    if model is None and optimizer is not None:
        raise ExperimentError("load_checkpoint: an optimizer goes with its model")
    chosen = _pick(run, which, key, mode)
    if chosen is None:
        return None
    if chosen.path.suffix == ".ckpt":
        if model is not None:
            raise ExperimentError(
                f"{chosen.path}: a checkpoint of a non-PyTorch object; load it without a "
                "model and use .state"
            )
        return _load_pickle(run, chosen)
    from mlbook.pytorch._checkpoints import load_torch

    return load_torch(run, chosen.path, model, optimizer, restore_rng, map_location)


def resume_from(
    run: Run,
    model: Any,
    optimizer: Any = None,
    *,
    which: Which | str | Path = "latest",
    key: str | None = None,
    mode: Mode = "max",
) -> int:
    """Load the newest (or best) checkpoint into a PyTorch model; the step to continue from.

    Returns 0 when there is no checkpoint (a fresh start), else the saved step + 1,
    so ``for epoch in run.iterate(range(start, epochs))`` picks up where it stopped.
    For other objects, use :func:`load_checkpoint` and its ``state`` and ``step``.
    """
    if not is_module(model):
        raise ExperimentError(
            f"resume_from: model must be a PyTorch model, got {type(model).__name__}; "
            "for other objects use load_checkpoint() (its .state and .step)"
        )
    loaded = load_checkpoint(run, model, optimizer, which=which, key=key, mode=mode)
    if loaded is None:
        return 0
    print(f"[mlbook] resumed from {loaded.path.name} (step {loaded.step})", flush=True)
    return loaded.step + 1
