"""PyTorch helpers for a run: setup, seeds, checkpoints with cleanup and resume, weights.

Imported only when used (``import mlbook.pytorch``); needs the ``torch`` extra.
Every helper takes the :class:`~mlbook.experiments.run.Run` a train hook gets::

    from mlbook import pytorch as mt

    @exp.train
    def train(run, model):
        device = mt.setup(run, model, seed=run.params.seed)     # seeds, device, setup.json
        optimizer = torch.optim.Adam(model.parameters(), lr=run.params.lr)
        start = mt.resume_from(run, model, optimizer)           # 0, or the step after the newest
        for epoch in run.iterate(range(start, run.params.epochs)):
            ...
            mt.save_checkpoint(run, model, optimizer, step=epoch, metrics={"acc": acc},
                               keep_last=2, keep_best="acc")

Checkpoints are ``checkpoints/step-<step>.pt`` in the run's directory: a dict with
the model's and the optimizer's state, the step, the metrics and the random
number generator states, written atomically and recorded as artifacts of the run
(kind ``checkpoint``). ``checkpoints/index.json`` keeps each one's step and metrics
so that cleanup never has to open them. Cleanup deletes only older checkpoints:
never the one just written, never the best one.

:class:`ClassificationDataset` is a ``torch.utils.data.Dataset`` over mlbook records
for image classification: ``(image tensor, class id)`` in the dataset's encoding.

Pre-trained weights live in ``Datasets/weights/``; :func:`load_pretrained` loads them
by name, records their sha256 as an input of the run (artifact kind ``input``), and
warns when they are the weights of an earlier run whose code has changed since.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import random
import sqlite3
import sys
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch.utils.data import Dataset as _TorchDataset

from mlbook._fs import atomic_write_text, atomic_writer, sha256_file
from mlbook.errors import ExperimentError

if TYPE_CHECKING:
    from mlbook.experiments.run import Run

__all__ = [
    "CHECKPOINT_DIR",
    "DELETED_KIND",
    "Checkpoint",
    "ClassificationDataset",
    "Pretrained",
    "count_parameters",
    "list_checkpoints",
    "load_checkpoint",
    "load_pretrained",
    "resume_from",
    "save_checkpoint",
    "seed_everything",
    "setup",
]

CHECKPOINT_DIR = "checkpoints"
FORMAT = "mlbook.pytorch/1"
WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin")
DELETED_KIND = "checkpoint-deleted"
_INDEX = "index.json"
_SETUP_FILE = "setup.json"
_SETUP_DONE = "_mlbook_pytorch_setup"

Mode = Literal["max", "min"]
Which = Literal["latest", "best"]


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint file: where it is, its step and the metrics saved with it."""

    path: Path
    step: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Pretrained:
    """What :func:`load_pretrained` loaded: the file, its sha256, and staleness."""

    path: Path
    sha256: str
    source_run: str | None = None  # the earlier run that wrote these weights, if known
    stale: str | None = None  # the warning when that run's code changed since


# -- seeds, device, setup ------------------------------------------------------------


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

    Seeds ``random``, NumPy and torch (``seed``, default ``run.params.seed`` or 0),
    sets torch's CPU threads when ``threads`` is given, picks the device (CUDA when
    available unless ``device`` says otherwise) and moves ``model`` to it. Writes
    ``setup.json`` in the run directory (hyper-parameters, seed, parameter counts,
    device, threads, torch version), records it as an artifact of kind ``setup``
    and prints one summary line. A second call in the same run changes the seed
    and device but writes nothing again.

    Returns:
        the device the model is on.
    """
    chosen = seed if seed is not None else int(run.params.get("seed", 0))
    seed_everything(chosen, deterministic=deterministic)
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


# -- data ----------------------------------------------------------------------------


class ClassificationDataset(_TorchDataset[tuple[torch.Tensor, int]]):
    """Image classification over mlbook records: ``(image, class id)`` pairs.

    Images are decoded with Pillow in ``mode`` (``"L"`` grayscale, ``"RGB"``) as
    float tensors ``C x H x W`` in 0..1; the class id is the record's one label in
    ``self.encoding`` (the dataset's fixed encoding, or the class subset numbered
    from ``start``). Save the encoding next to the model so predictions decode.
    For detection, use ``Dataset.torch()`` (:mod:`mlbook.datasets.torch`).

    Args:
        dataset: an opened dataset or its directory.
        split: one split or several (``None``: all records).
        classes: a class subset; records with none of these labels are left out.
        mode: the Pillow mode images are converted to.
        transform: called on each image tensor.
        cache: keep decoded images in memory (small datasets, several epochs).

    Raises:
        DatasetError: a record that has no label or more than one (of the subset).
    """

    def __init__(
        self,
        dataset: Any,
        split: str | list[str] | None = None,
        classes: Any = None,
        *,
        start: int = 0,
        mode: str = "RGB",
        transform: Any = None,
        cache: bool = False,
    ) -> None:
        from mlbook.datasets import open_dataset
        from mlbook.errors import DatasetError

        self.dataset = open_dataset(dataset) if isinstance(dataset, str | Path) else dataset
        if classes is None:
            self.encoding = self.dataset.encoding
        else:
            self.encoding = self.dataset.subset(classes, start=start)
        chosen = None if classes is None else self.encoding
        self.records = self.dataset.records(split=split, classes=chosen)
        self.labels: list[int] = []
        for record in self.records:
            if len(record.labels) != 1:
                raise DatasetError(
                    f"{self.dataset.name}: record {record.id!r} ({record.file}) has "
                    f"{len(record.labels)} labels {record.labels}; classification needs "
                    "exactly one: fix the record or choose a class subset"
                )
            self.labels.append(self.encoding.encode(record.labels[0]))
        self.mode = mode
        self.transform = transform
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.records)

    def image(self, index: int) -> torch.Tensor:
        """The decoded image of record ``index`` (before ``transform``)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        import numpy as np
        from PIL import Image

        from mlbook.errors import DatasetError

        path = self.dataset.path_of(self.records[index].file)
        try:
            with Image.open(path) as opened:
                array = np.asarray(opened.convert(self.mode), dtype=np.float32) / 255.0
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read the image ({exc})") from exc
        tensor = torch.from_numpy(array.reshape(array.shape[0], array.shape[1], -1))
        tensor = tensor.permute(2, 0, 1).contiguous()
        if self._cache is not None:
            self._cache[index] = tensor
        return tensor

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images stacked (``N x C x H x W``) and their labels (``N``, int64).

        For datasets that fit in memory: batch them with a ``TensorDataset``.
        """
        if not self.records:
            return torch.empty(0), torch.empty(0, dtype=torch.int64)
        images = torch.stack([self[index][0] for index in range(len(self))])
        return images, torch.tensor(self.labels, dtype=torch.int64)


# -- checkpoints ---------------------------------------------------------------------


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


def _read_index(folder: Path) -> dict[str, dict[str, Any]]:
    """``index.json``: file name -> ``{"metrics": {...}, "sha256": ..., "size": ...}``."""
    try:
        data = json.loads((folder / _INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    index: dict[str, dict[str, Any]] = {}
    for name, entry in data.items():
        if isinstance(entry, dict):
            index[str(name)] = (
                entry if isinstance(entry.get("metrics"), dict) else {"metrics": entry}
            )
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
    metrics = state.get("metrics") if isinstance(state, dict) else None
    return dict(metrics) if isinstance(metrics, dict) else {}


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
    _record(run, target, "checkpoint", hashing.size, hashing.hexdigest())
    if keep_last is not None or keep_best is not None:
        for old in _removable(folder, index, target, keep_last or 1, keep_best, mode):
            entry = index.pop(old.name, {})
            if "sha256" in entry:
                _record(run, old, DELETED_KIND, int(entry.get("size", 0)), str(entry["sha256"]))
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


def _record(run: Run, path: Path, kind: str, size: int, digest: str) -> None:
    """Record an artifact whose size and sha256 are known (no second read of a big file)."""
    if run.is_test:
        return
    channel = getattr(run, "_channel", None)
    if channel is None:
        run.artifact(path, kind=kind)
        return
    channel.send(["artifact", str(path), size, digest, kind])


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


# -- pre-trained weights -------------------------------------------------------------


def _weights_file(run: Run, name: str | Path) -> Path:
    text = str(name)
    candidate = Path(text)
    if candidate.is_absolute() or os.sep in text or "/" in text:
        path = candidate if candidate.is_absolute() else run.project_root / candidate
        if not path.is_file():
            raise ExperimentError(f"load_pretrained: no weights file {path}")
        return path
    folder = _weights_dir(run)
    direct = folder / text
    if direct.is_file():
        return direct
    for suffix in WEIGHT_SUFFIXES:
        if (folder / (text + suffix)).is_file():
            return folder / (text + suffix)
    have = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    listing = ", ".join(have) if have else "none"
    raise ExperimentError(
        f"load_pretrained: no weights {text!r} in {folder} (have: {listing}); "
        "put the file there or pass a path"
    )


def _weights_dir(run: Run) -> Path:
    from mlbook.project import Project

    try:
        return Project.open(run.project_root).datasets_dir / "weights"
    except Exception:
        return run.project_root / "Datasets" / "weights"


def _read_weights(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise ExperimentError(
                f"{path}: reading .safetensors needs the safetensors package; "
                "pip install safetensors"
            ) from exc
        return dict(load_file(str(path)))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ExperimentError(f"{path}: cannot read the weights ({exc})") from exc
    if isinstance(state, dict) and state.get("format") == FORMAT and "model" in state:
        state = state["model"]  # an mlbook checkpoint: take the model part
    if not isinstance(state, dict):
        raise ExperimentError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def _source_of(root: Path, digest: str) -> tuple[str, list[Any]] | None:
    """The earlier run that wrote a file with ``digest``, and the files it used."""
    from mlbook.provenance.files import UsedFile

    store = root / ".mlbook" / "runs.sqlite"
    if not store.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error:
        return None
    try:
        row = db.execute(
            "SELECT a.run_id FROM artifacts a JOIN runs r ON r.id = a.run_id "
            "WHERE a.sha256 = ? AND a.kind IN ('weights', 'checkpoint') "
            "ORDER BY r.created DESC LIMIT 1",
            (digest,),
        ).fetchone()
        if row is None:
            return None
        files = db.execute(
            "SELECT path, size, sha256 FROM run_files WHERE run_id = ?", (row[0],)
        ).fetchall()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return row[0], [UsedFile(path, size, sha) for path, size, sha in files]


def load_pretrained(
    run: Run,
    model: torch.nn.Module,
    name: str | Path,
    *,
    strict: bool = True,
) -> Pretrained:
    """Load weights by name from ``Datasets/weights/`` into ``model`` and record them.

    ``name`` is a file name in ``Datasets/weights/`` (the suffix ``.pt``, ``.pth``,
    ``.safetensors`` or ``.bin`` may be left out) or a path (relative to the project
    root), e.g. the ``weights/model.pt`` of an earlier run. The file's sha256 is
    recorded as an input of the run (artifact kind ``input``). When the file is the
    weights (or a checkpoint) of an earlier run and the code that run used has
    changed since, a warning names the changed files (stale weights).

    Raises:
        ExperimentError: no such weights, an unreadable file, or (with ``strict``)
            keys that do not match the model.
    """
    path = _weights_file(run, name)
    digest = sha256_file(path)
    state = _read_weights(path)
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "mismatch"
        raise ExperimentError(
            f"{path}: the weights do not fit {type(model).__name__} ({first}); "
            "check the version's params, or pass strict=False"
        ) from exc
    run.artifact(path, kind="input")
    source = _source_of(run.project_root, digest)
    stale: str | None = None
    if source is not None:
        from mlbook.provenance.stale import stale_files, stale_summary

        stale = stale_summary(stale_files(source[1], run.project_root), source[0])
        if stale is not None:
            warnings.warn(f"stale weights {path.name}: {stale}", stacklevel=2)
            print(f"[mlbook] warning: stale weights {path.name}: {stale}", file=sys.stderr)
    return Pretrained(
        path=path, sha256=digest, source_run=source[0] if source else None, stale=stale
    )
