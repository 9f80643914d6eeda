"""E001: a small CNN on the 8x8 digits, in two widths.

Run it: `mlbook run E001 --mode test` (seconds, nothing recorded), then `mlbook run E001`.
Needs the data first: `python Data_processing/prepare_digits.py`.
"""

import torch
from torch import nn

import mlbook
from common.data import sample
from common.training import predict, train_classifier

exp = mlbook.Experiment(
    seed=0,  # the runner seeds random, NumPy and torch with it before build() runs
    metric="acc",  # `mlbook export E00x` picks the run with the highest test accuracy
    goal="max",
    title="Small CNN on digits",
    base={
        "lr": 3e-3,
        "epochs": 15,
        "batch_size": 64,
        "weight_decay": 1e-4,
        "dropout": 0.1,
        "threads": 1,
    },
    versions={
        "narrow": {"width": 8},
        "wide": {"width": 32},
    },
    dataset="digits",  # run.data("train") reads Datasets/digits
)


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions (width, then 2 x width channels), max-pool, two linear layers."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 4 * 4, 64),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(64, 10),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


@exp.model
def build(p):
    """The CNN of this version (p.width channels in the first layer)."""
    return DigitsCNN(width=p.width, dropout=p.dropout)


@exp.train
def train(run, model):
    """Adam on the train split; checkpoints each epoch; test accuracy of the best epoch."""
    return train_classifier(run, model)


exp.predict(predict)  # exports and `mlbook serve` call predict(model, inputs)
exp.sample(sample)  # the input an export is verified (and ONNX-checked) with
