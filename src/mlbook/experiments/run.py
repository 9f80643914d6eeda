"""The :class:`Run` context a train hook receives: params, directories, logging, weights.

A ``Run`` lives in the child process that runs one version. Everything it
records (metrics, artifacts, weights) goes to the runner as events; the runner
owns the store. In ``test`` mode :meth:`Run.iterate` stops after a few steps, at
every level of nested loops. The module-level ``mlbook.log`` and friends
(:mod:`mlbook._active`) use the run the child made current.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from mlbook._fs import atomic_writer, sha256_file
from mlbook.errors import ExperimentError
from mlbook.experiments.api import Params
from mlbook.experiments.contract import Channel
from mlbook.experiments.metrics import Outbox

if TYPE_CHECKING:
    from mlbook.experiments.checkpoints import Checkpoint

__all__ = ["Run", "load_weights"]

T = TypeVar("T")

_PROGRESS_SECONDS = 0.25


class Run:
    """What a hook gets about the run it is part of.

    Attributes:
        id: the run ID (``20261125-110000-3fa2c1``); in test mode a throw-away ID.
        experiment: the experiment ID (``E012``).
        version: the version name.
        mode: ``test``, ``run`` or ``export``.
        params: the version's hyper-parameters (attribute access: ``run.params.lr``).
        dir: this run's output directory (``Models/outputs/<ID>/<version>/<run-id>/``,
            a temporary directory in test mode).
        project_root: the project root.
        models_dir: ``Models/`` (also the working directory of the run).
        dataset_dir: ``Datasets/<dataset>`` when the experiment names a dataset, else ``None``.
        resume_dir: the output directory of the run being resumed, else ``None``.
        source_weights: in export mode, the weights of the newest completed run of
            this version, else ``None``.
        test_steps: in test mode, how many steps :meth:`iterate` yields.
        inner_steps: in test mode, how many steps nested :meth:`iterate` loops yield
            (2nd level, 3rd...; the last repeats; empty: ``test_steps``).
    """

    def __init__(
        self,
        *,
        id: str,
        experiment: str,
        version: str,
        mode: str,
        params: Params,
        dir: Path,
        project_root: Path,
        models_dir: Path,
        dataset_dir: Path | None = None,
        resume_dir: Path | None = None,
        source_weights: Path | None = None,
        test_steps: int = 2,
        inner_steps: tuple[int, ...] = (),
        outbox: Outbox | None = None,
    ) -> None:
        self.id = id
        self.experiment = experiment
        self.version = version
        self.mode = mode
        self.params = params
        self.dir = dir
        self.project_root = project_root
        self.models_dir = models_dir
        self.dataset_dir = dataset_dir
        self.resume_dir = resume_dir
        self.source_weights = source_weights
        self.test_steps = test_steps
        self.inner_steps = tuple(inner_steps)
        self._outbox = outbox or Outbox(Channel(None))
        self._last_progress = 0.0
        self._depth = 0
        self.weights_path: Path | None = None
        #: the saved view ``data()`` reads by default (``Experiment(view=...)``)
        self.view: str | None = None
        self._datasets: dict[str | None, Any] = {}

    @property
    def is_test(self) -> bool:
        """True in ``test`` mode (nothing is recorded; loops are cut short)."""
        return self.mode == "test"

    # -- metrics -------------------------------------------------------------------

    def log(self, step: int | None = None, **metrics: Any) -> None:
        """Record metric values at ``step`` (default: the previous step + 1).

        Values are numbers (anything ``float()`` takes but strings: 0-d arrays and
        tensors too); NaN and ±inf are kept. A value that is not a number, or a
        step that is not an integer, is dropped with one warning naming the key.
        Buffered: costs about a microsecond; sent to the runner in batches at
        least every 0.2 s.
        """
        self._outbox.log(step, metrics)

    def flush(self) -> None:
        """Send buffered metrics and return once the runner has committed them to the store.

        After ``flush()`` returns, a ``kill -9`` of the runner loses none of the
        points logged before it.
        """
        self._outbox.flush()

    def log_params(self, **params: Any) -> None:
        """Add ``params`` to this run's params (``mlbook.log_params``); stored with the run.

        Values are kept as JSON (numbers, strings, booleans, ``None``, lists and
        dicts); anything else is stored as its ``str()``.
        """
        clean = {str(key): _jsonable(value) for key, value in params.items()}
        self.params = Params({**self.params, **clean})
        self._outbox.params(clean)

    def iterate(self, iterable: Iterable[T], total: int | None = None) -> Iterator[T]:
        """Yield from ``iterable``, reporting progress; in test mode, stop after a few steps.

        Loops nest: an ``iterate`` inside another one's body (a batch loop in an
        epoch loop, here or through ``mlbook.iterate`` in shared code) is cut too,
        after ``inner_steps`` (default ``test_steps``). Only the outermost loop
        reports progress.
        """
        if total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        return self._iterate(iterable, total)

    def _iterate(self, iterable: Iterable[T], total: int | None) -> Iterator[T]:
        level = self._depth
        self._depth = level + 1
        try:
            limit = self._limit(level)
            if limit is not None and total is not None:
                total = min(total, limit)
            progress = self._outbox.progress if level == 0 else None
            done = 0
            for item in iterable:
                if limit is not None and done >= limit:
                    break
                if progress is not None:
                    now = time.monotonic()
                    if now - self._last_progress >= _PROGRESS_SECONDS:
                        self._last_progress = now
                        progress(done, total)
                yield item
                done += 1
            if progress is not None:
                progress(done, total)
        finally:
            self._depth = level

    def _limit(self, level: int) -> int | None:
        if not self.is_test:
            return None
        if level == 0 or not self.inner_steps:
            return self.test_steps
        return self.inner_steps[min(level, len(self.inner_steps)) - 1]

    # -- data ----------------------------------------------------------------------

    def dataset(self, view: str | None = None) -> Any:
        """The experiment's dataset (a :class:`~mlbook.datasets.Dataset`), opened once per run.

        With ``view`` (default: the experiment's ``view=``), the dataset of that saved
        view (``views/<name>.json``); the run records the view's name, query, the
        records hash and a hash of the ids it holds.

        Raises:
            ExperimentError: the experiment names no dataset.
            QueryError: no such view.
        """
        if self.dataset_dir is None:
            raise ExperimentError(
                f"{self.experiment}: run.data() needs a dataset; "
                "pass dataset='name' to mlbook.Experiment(...)"
            )
        view = view if view is not None else self.view
        opened = self._datasets.get(view)
        if opened is not None:
            return opened
        import importlib

        datasets: Any = importlib.import_module("mlbook.datasets")
        opened = datasets.open_dataset(self.dataset_dir)
        if view is not None:
            opened = opened.view(view)
            use = opened.view_use
            if use is not None:
                self._outbox.view(str(Path(self.dataset_dir).resolve()), use.to_record())
        self._datasets[view] = opened
        return opened

    def data(
        self,
        split: str | None = None,
        classes: list[str] | None = None,
        view: str | None = None,
    ) -> Any:
        """Records of the experiment's dataset (or of a saved view of it, see
        :meth:`dataset`), filtered by split and class subset.

        Raises:
            ExperimentError: the experiment names no dataset.
            QueryError: no such view.
        """
        return self.dataset(view).records(split=split, classes=classes)

    # -- files -----------------------------------------------------------------------

    def path(self, name: str) -> Path:
        """A path inside this run's output directory (parents created)."""
        target = self.dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def save_weights(self, model: Any, name: str = "model") -> Path:
        """Save a model's weights under ``weights/`` and record them as the run's weights.

        A PyTorch module (anything with ``state_dict()``) is saved with ``torch.save``
        as ``weights/<name>.pt``; anything else is pickled to ``weights/<name>.pkl``.
        Returns the path written.
        """
        if hasattr(model, "state_dict"):
            import torch

            target = self.path(f"weights/{name}.pt")
            with atomic_writer(target) as handle:
                torch.save(model.state_dict(), handle)
        else:
            target = self.path(f"weights/{name}.pkl")
            with atomic_writer(target) as handle:
                pickle.dump(model, handle, protocol=pickle.HIGHEST_PROTOCOL)
        self.weights_path = target
        self._record(target, "weights")
        return target

    def artifact(self, path: Path | str, kind: str = "file", sha256: str | None = None) -> Path:
        """Record a file this run wrote (relative paths are inside :attr:`dir`).

        Pass ``sha256`` when it is already known (computed while writing) to spare
        a second read of a large file.
        """
        target = Path(path)
        if not target.is_absolute():
            target = self.dir / target
        if not target.is_file():
            raise ExperimentError(f"run.artifact({str(path)!r}): no such file {target}")
        self._record(target, kind, sha256)
        return target

    def _record(self, path: Path, kind: str, sha256: str | None = None) -> None:
        if self.is_test:
            return
        digest = sha256 or sha256_file(path)
        self._outbox.artifact(str(path), path.stat().st_size, digest, kind)

    # -- checkpoints -----------------------------------------------------------------

    def save_checkpoint(
        self,
        model: Any,
        optimizer: Any = None,
        *,
        step: int,
        metrics: Mapping[str, Any] | None = None,
        keep_last: int | None = None,
        keep_best: str | None = None,
        mode: Literal["max", "min"] = "max",
        extra: Mapping[str, Any] | None = None,
    ) -> Checkpoint:
        """Save the checkpoint of ``step`` and clean up older ones::

            run.save_checkpoint(model, optimizer, step=epoch, metrics={"acc": acc},
                                keep_last=2, keep_best="acc")

        A PyTorch model is saved with its optimizer, metrics and random generators
        as ``checkpoints/step-<step>.pt``; any other object is pickled as
        ``checkpoints/step-<step>.ckpt``. ``keep_last`` newest and the best by
        ``keep_best`` (``mode`` max or min) are kept. Returns the
        :class:`~mlbook.experiments.checkpoints.Checkpoint` written; see
        :func:`mlbook.experiments.checkpoints.save_checkpoint`.
        """
        from mlbook.experiments.checkpoints import save_checkpoint

        return save_checkpoint(
            self,
            model,
            optimizer,
            step=step,
            metrics=metrics,
            keep_last=keep_last,
            keep_best=keep_best,
            mode=mode,
            extra=extra,
        )

    def load_checkpoint(
        self,
        model: Any = None,
        optimizer: Any = None,
        *,
        which: str | Path = "latest",
        key: str | None = None,
        mode: Literal["max", "min"] = "max",
        restore_rng: bool = True,
        map_location: Any = "cpu",
    ) -> Checkpoint | None:
        """Load a checkpoint of this run, else of the run being resumed; ``None`` if none.

        ``run.load_checkpoint(model, optimizer, which="best", key="acc")`` loads the
        newest (``"latest"``), the best, or a named checkpoint file into a PyTorch
        model and optimizer; ``run.load_checkpoint()`` returns a checkpoint of another
        object with the object as ``.state``. See
        :func:`mlbook.experiments.checkpoints.load_checkpoint`.
        """
        from mlbook.experiments.checkpoints import load_checkpoint

        return load_checkpoint(
            self,
            model,
            optimizer,
            which=which,
            key=key,
            mode=mode,
            restore_rng=restore_rng,
            map_location=map_location,
        )

    def resume_from(
        self,
        model: Any,
        optimizer: Any = None,
        *,
        which: str | Path = "latest",
        key: str | None = None,
        mode: Literal["max", "min"] = "max",
    ) -> int:
        """Load the newest (or best) checkpoint into a PyTorch model; the step to continue from.

        0 when there is nothing to resume, else the saved step + 1::

            start = run.resume_from(model, optimizer)
            for epoch in run.iterate(range(start, run.params.epochs)): ...

        See :func:`mlbook.experiments.checkpoints.resume_from`.
        """
        from mlbook.experiments.checkpoints import resume_from

        return resume_from(self, model, optimizer, which=which, key=key, mode=mode)

    def __repr__(self) -> str:
        return f"Run({self.experiment}/{self.version} {self.mode} id={self.id})"


def _jsonable(value: Any) -> Any:
    """``value`` as JSON-able data: containers kept, numpy/torch scalars as numbers, else str."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    for kind in (bool, int, float, str):  # subclasses (numpy.float64, enums) as the base type
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dict__") and type(value).__name__ == "Namespace":
        return _jsonable(vars(value))
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return _jsonable(item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)


def load_weights(path: Path | str, model: Any = None) -> Any:
    """Load weights saved by :meth:`Run.save_weights`.

    With a ``.pt`` file and a ``model``, loads the state dict into the model and
    returns the model; with a ``.pkl`` file returns the pickled object.
    """
    target = Path(path)
    if target.suffix == ".pt":
        import torch

        state = torch.load(target, map_location="cpu", weights_only=True)
        if model is None:
            return state
        model.load_state_dict(state)
        return model
    with open(target, "rb") as handle:
        return pickle.load(handle)
