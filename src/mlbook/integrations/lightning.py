"""PyTorch Lightning: a ``Trainer`` logger that records into the current mlbook run.

::

    from lightning.pytorch import Trainer
    from mlbook.integrations.lightning import MlbookLogger

    trainer = Trainer(max_epochs=10, logger=MlbookLogger())
    trainer.fit(model, data)

Inside a run (``mlbook run``, a plain script or a hook) the logger records:

- the hyper-parameters (``self.save_hyperparameters()``, ``log_hyperparams``) as
  the run's params (``mlbook.log_params``);
- every metric the module logs (``self.log("loss", ...)``) as a series, at the
  trainer's global step (``mlbook.log``: the same buffered pipe as ``run.log``);
- the checkpoints ``ModelCheckpoint`` keeps, as the run's artifacts (kind
  ``checkpoint``), written under the run's directory (``lightning/checkpoints/``).

In test mode (``mlbook run --mode test``) the runner's child sets
``PL_TRAINER_FAST_DEV_RUN`` to the test steps, so every ``Trainer`` runs
``fast_dev_run`` (a few batches of one epoch; Lightning then logs nothing).
Outside mlbook (``python script.py``) the logger records nothing and checkpoints
go where Lightning puts them without a logger.

Needs ``lightning`` (``pip install mlbook[lightning]``).
"""

from __future__ import annotations

import os
from argparse import Namespace
from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from mlbook import _active

__all__ = ["MlbookLogger"]


class MlbookLogger(Logger):
    """Records a Lightning ``Trainer``'s params, metrics and checkpoints in the current run.

    Args:
        log_checkpoints: record the checkpoints ``ModelCheckpoint`` keeps as artifacts.
    """

    def __init__(self, *, log_checkpoints: bool = True) -> None:
        super().__init__()
        self._log_checkpoints = log_checkpoints
        self._callbacks: list[Any] = []

    @property
    def name(self) -> str:
        """``lightning`` inside a run (checkpoints go to ``<run dir>/lightning/``)."""
        return "lightning" if _active.current_run() is not None else "mlbook"

    @property
    def version(self) -> str:
        """The run's version (empty: Lightning adds no folder for it)."""
        return ""

    @property
    def save_dir(self) -> str | None:
        """The run's output directory (``None`` outside a run)."""
        run = _active.current_run()
        return None if run is None else str(run.dir)

    @property
    def root_dir(self) -> str | None:
        """Where Lightning writes this logger's files: ``<run dir>/lightning``."""
        save_dir = self.save_dir
        return None if save_dir is None else os.path.join(save_dir, self.name)

    @property
    def log_dir(self) -> str | None:
        """Same as :attr:`root_dir`."""
        return self.root_dir

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        """Add ``params`` to the run's params."""
        if isinstance(params, Namespace):
            params = vars(params)
        _active.log_params(**{str(key): value for key, value in dict(params or {}).items()})

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record ``metrics`` at ``step`` (tensors become numbers)."""
        _active.log(step, **metrics)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Remember the callback; its checkpoints are recorded when training ends."""
        if self._log_checkpoints and checkpoint_callback not in self._callbacks:
            self._callbacks.append(checkpoint_callback)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Record the checkpoints the callbacks kept (best and last) as artifacts."""
        run = _active.current_run()
        if run is None:
            return
        seen: set[str] = set()
        for callback in self._callbacks:
            paths = [*getattr(callback, "best_k_models", {}), callback.last_model_path]
            for path in paths:
                if path and path not in seen and os.path.isfile(path):
                    seen.add(path)
                    run.artifact(path, "checkpoint")
