"""Checkpoint cost: mlbook.pytorch.save_checkpoint against a hand-written torch.save loop.

Both save the model and optimizer state every step and keep the two newest files.
mlbook also keeps the best by a metric, writes atomically, keeps an index, stores
the RNG states and hashes each file for the run store (what a real run records).
The peer is what people write by hand: ``torch.save`` of the two state dicts plus a
glob-and-delete of the older files; "by hand + fsync" also writes to a temporary
file, fsyncs it and renames it (the same durability as mlbook).

    .venv/bin/python benchmarks/bench_checkpoint.py [--repeat 30]

Prints the median time per save for a small CNN (the digits example's "wide", 85k
parameters) and a 4M-parameter MLP, and the ratios mlbook / hand-written.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, time_call

from mlbook import pytorch as mt
from mlbook.experiments.api import Params
from mlbook.experiments.run import Run


def cnn() -> nn.Module:
    width = 32
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * 16, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 1024))


def prime(model: nn.Module) -> torch.optim.Optimizer:
    """An Adam optimizer with state (one step taken), as in real training."""
    optimizer = torch.optim.Adam(model.parameters())
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    return optimizer


def bench(name: str, model: nn.Module, repeat: int) -> None:
    optimizer = prime(model)
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = Run(
            id="bench",
            experiment="E000",
            version="bench",
            mode="run",
            params=Params({}),
            dir=root / "mlbook",
            project_root=root,
            models_dir=root,
        )
        counter = iter(range(10**9))

        def with_mlbook() -> None:
            step = next(counter)
            mt.save_checkpoint(
                run,
                model,
                optimizer,
                step=step,
                metrics={"acc": (step * 7919) % 101 / 100},
                keep_last=2,
                keep_best="acc",
            )

        folder = root / "plain"
        folder.mkdir()
        plain_counter = iter(range(10**9))

        def by_hand() -> None:
            step = next(plain_counter)
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
            torch.save(state, folder / f"step-{step:08d}.pt")
            for old in sorted(folder.glob("step-*.pt"))[:-2]:
                old.unlink()

        durable = root / "durable"
        durable.mkdir()
        durable_counter = iter(range(10**9))

        def by_hand_durable() -> None:
            step = next(durable_counter)
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
            tmp = durable / f".step-{step:08d}.tmp"
            with open(tmp, "wb") as handle:
                torch.save(state, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, durable / f"step-{step:08d}.pt")
            for old in sorted(durable.glob("step-*.pt"))[:-2]:
                old.unlink()

        for func in (with_mlbook, by_hand, by_hand_durable):
            time_call(func, 3)
        ours = median(time_call(with_mlbook, repeat))
        peer = median(time_call(by_hand, repeat))
        fair = median(time_call(by_hand_durable, repeat))
    print(
        f"{name:<20} {params:>10,} params  mlbook {ours * 1e3:7.2f} ms  "
        f"by hand {peer * 1e3:7.2f} ms ({ours / peer:4.2f}x)  "
        f"by hand + fsync {fair * 1e3:7.2f} ms ({ours / fair:4.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"median time per checkpoint save (keep 2 newest), {args.repeat} saves, "
        f"torch {torch.__version__}"
    )
    bench("digits CNN (wide)", cnn(), args.repeat)
    bench("MLP 1024-2048-1024", mlp(), args.repeat)


if __name__ == "__main__":
    main()
