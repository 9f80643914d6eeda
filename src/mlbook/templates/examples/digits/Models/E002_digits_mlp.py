"""E002: a multi-layer perceptron on the same digits, for comparison with E001's CNN.

Run it: `mlbook run E002 --mode test`, then `mlbook run E002`.
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
    title="MLP on digits",
    base={
        "lr": 2e-3,
        "epochs": 20,
        "batch_size": 64,
        "weight_decay": 1e-4,
        "dropout": 0.1,
        "threads": 1,
    },
    versions={
        "h64": {"hidden": [64]},
        "h256x2": {"hidden": [256, 256]},
    },
    dataset="digits",
)


class DigitsMLP(nn.Module):
    """The 64 pixels through fully connected layers of the given sizes, then 10 classes."""

    def __init__(self, hidden: list[int], dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        size = 8 * 8
        for width in hidden:
            layers += [nn.Linear(size, width), nn.ReLU(), nn.Dropout(dropout)]
            size = width
        layers.append(nn.Linear(size, 10))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


@exp.model
def build(p):
    """The MLP of this version (p.hidden: the sizes of the hidden layers)."""
    return DigitsMLP(hidden=list(p.hidden), dropout=p.dropout)


@exp.train
def train(run, model):
    """Same training as E001 (Models/common/training.py), so the models compare fairly."""
    return train_classifier(run, model)


exp.predict(predict)
exp.sample(sample)
