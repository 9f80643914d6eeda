"""Shared training and evaluation for the digits experiments (E001, E002, ...).

:func:`train_classifier` is the whole loop a train hook needs: set up the run
(seeds, threads, parameter count and device recorded once), resume from a
checkpoint when there is one, train with Adam, log the loss and the validation
accuracy per epoch, keep the last two checkpoints and the best one, then reload
the best checkpoint, save its weights and measure it on the test split.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import mlbook
from common.data import load_split, loader, to_batch
from mlbook import pytorch as mt

CLASSES = [str(digit) for digit in range(10)]


def fit_epoch(model: nn.Module, batches: Any, optimizer: torch.optim.Optimizer) -> float:
    """One pass over ``batches``; returns the mean training loss.

    ``mlbook.iterate`` cuts the batch loop short in test mode (nested in the
    epoch loop's ``run.iterate``); in a real run it yields every batch.
    """
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    total, count = 0.0, 0
    for images, labels in mlbook.iterate(batches):
        optimizer.zero_grad()
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(labels)
        count += len(labels)
    return total / max(count, 1)


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of ``images`` whose predicted class is the label."""
    model.eval()
    predicted = model(images).argmax(dim=1)
    return float((predicted == labels).float().mean())


def train_classifier(run: Any, model: nn.Module) -> dict[str, float]:
    """Train ``model`` on the train split; returns the test accuracy and friends.

    Params used: ``lr``, ``epochs``, ``batch_size``, ``weight_decay``, ``seed``,
    ``threads`` (torch CPU threads). The runner has seeded everything with
    ``seed`` before the model was built; ``setup`` records it.
    """
    p = run.params
    mt.setup(run, model, threads=p.threads, device="cpu")
    optimizer = torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    start = run.resume_from(model, optimizer)  # 0, or the epoch after the newest checkpoint
    train = loader(run, "train", p.batch_size, shuffle=True)
    val_images, val_labels = load_split(run, "val")
    loss = float("nan")
    for epoch in run.iterate(range(start, p.epochs)):
        loss = fit_epoch(model, train, optimizer)
        val_acc = accuracy(model, val_images, val_labels)
        run.log(step=epoch, loss=loss, val_acc=val_acc)
        run.save_checkpoint(
            model,
            optimizer,
            step=epoch,
            metrics={"loss": loss, "val_acc": val_acc},
            keep_last=2,
            keep_best="val_acc",
        )
    best = run.load_checkpoint(model, which="best", key="val_acc", restore_rng=False)
    run.save_weights(model)
    test_images, test_labels = load_split(run, "test")
    return {
        "acc": accuracy(model, test_images, test_labels),
        "val_acc": best.metrics["val_acc"] if best else float("nan"),
        "best_epoch": best.step if best else -1,
        "loss": loss,
    }


@torch.no_grad()
def predict(model: nn.Module, inputs: Any) -> list[dict[str, Any]]:
    """The predicted digit of each image: ``[{"label": "3", "score": 0.98}, ...]``.

    ``inputs``: see :func:`common.data.to_batch` (arrays of 0..255 pixels, PNG
    bytes, base64 text, PIL images; one image or a list).
    """
    model.eval()
    probabilities = torch.softmax(model(to_batch(inputs)), dim=1)
    scores, indices = probabilities.max(dim=1)
    return [
        {"label": CLASSES[int(index)], "score": round(float(score), 4)}
        for score, index in zip(scores, indices, strict=True)
    ]
