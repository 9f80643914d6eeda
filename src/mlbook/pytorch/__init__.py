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

The ``Run`` methods are the same functions with the run bound:
``run.save_checkpoint(model, optimizer, step=..., metrics=...)``,
``run.load_checkpoint(model, ...)``, ``run.resume_from(model, optimizer)``. Saving and
loading return a :class:`Checkpoint`; ``resume_from`` the step to continue from. They live in
:mod:`mlbook.experiments.checkpoints`, which also checkpoints objects that are not
PyTorch models.

Checkpoints are ``checkpoints/step-<step>.pt`` in the run's directory: a dict with
the model's and the optimizer's state, the step, the metrics, the random number
generator states and ``extra``, written atomically and recorded as artifacts of the
run (kind ``checkpoint``). ``checkpoints/index.json`` keeps each one's step, metrics
and sha256, so cleanup never opens them. Cleanup deletes only older checkpoints:
never the one just written, never the best one.

:class:`TorchDataset` (also ``open_dataset(path).torch(...)``) is the
``torch.utils.data.Dataset`` over mlbook records: ``(image, class id)`` for
classification, ``(image, target dict)`` for detection.

Pre-trained weights live in ``Datasets/weights/``; :func:`load_pretrained` loads them
by name, records their sha256 as an input of the run (artifact kind ``input``), and
warns when they are the weights of an earlier run whose code has changed since.
"""

from __future__ import annotations

from mlbook.datasets.torch import TorchDataset
from mlbook.experiments.checkpoints import (
    CHECKPOINT_DIR,
    DELETED_KIND,
    Checkpoint,
    list_checkpoints,
    load_checkpoint,
    resume_from,
    save_checkpoint,
)
from mlbook.pytorch._setup import count_parameters, seed_everything, setup
from mlbook.pytorch._weights import WEIGHT_SUFFIXES, Pretrained, load_pretrained

__all__ = [
    "CHECKPOINT_DIR",
    "DELETED_KIND",
    "WEIGHT_SUFFIXES",
    "Checkpoint",
    "Pretrained",
    "TorchDataset",
    "count_parameters",
    "list_checkpoints",
    "load_checkpoint",
    "load_pretrained",
    "resume_from",
    "save_checkpoint",
    "seed_everything",
    "setup",
]
