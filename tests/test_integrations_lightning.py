"""Lightning's MlbookLogger, with the real library: params, metrics, checkpoints, test mode."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("lightning")

from mlbook.experiments.query import get_run, metric_series, run_artifacts
from mlbook.experiments.runner import run_experiments
from mlbook.project import Project

pytestmark = pytest.mark.slow  # trains with Lightning

SCRIPT = """
    import argparse
    import json

    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from mlbook.integrations.lightning import MlbookLogger


    class Regression(pl.LightningModule):
        def __init__(self, lr: float) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, index):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=False)
            return loss

        def validation_step(self, batch, index):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    data = TensorDataset(x, x.sum(dim=1, keepdim=True))
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        logger=MlbookLogger(),
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[pl.callbacks.ModelCheckpoint(monitor="val_loss", save_last=True)],
    )
    train, val = DataLoader(data, batch_size=16), DataLoader(data, batch_size=32)
    trainer.fit(Regression(args.lr), train, val)
    with open("trained.json", "w") as handle:
        json.dump({"fast_dev_run": trainer.fast_dev_run, "steps": trainer.global_step}, handle)
"""


@pytest.fixture
def lightning_project(project: Project) -> Project:
    (project.models_dir / "E1_lightning.py").write_text(textwrap.dedent(SCRIPT))
    return project


def test_the_logger_records_params_metrics_and_checkpoints(lightning_project: Project) -> None:
    project = lightning_project
    (info,) = run_experiments(project, ["E1"], sets={"epochs": "2"}, observers=[]).runs
    assert info.status == "completed", info.error
    record = get_run(project, info.run_id)
    assert record.params == {"lr": 0.05, "epochs": 2}  # save_hyperparameters() merged: same lr
    series = metric_series(project, record)
    assert [p.step for p in series["train_loss"]] == list(range(8))  # 4 batches x 2 epochs
    assert len(series["val_loss"]) == 2 and "epoch" in series
    out = project.root / record.outputs
    assert json.loads((out / "trained.json").read_text()) == {"fast_dev_run": False, "steps": 8}
    artifacts = {Path(a.path).name: a.kind for a in run_artifacts(project, info.run_id)}
    assert artifacts == {"epoch=1-step=8.ckpt": "checkpoint", "last.ckpt": "checkpoint"}
    assert (out / "lightning" / "checkpoints" / "last.ckpt").is_file()


def test_test_mode_is_fast_dev_run(lightning_project: Project, tmp_path: Path) -> None:
    (info,) = run_experiments(lightning_project, ["E1"], mode="test", observers=[]).runs
    assert info.status == "completed", info.error
    assert info.metrics == {}  # fast_dev_run logs nothing


def test_outside_a_run_the_logger_records_nothing() -> None:
    from mlbook.integrations.lightning import MlbookLogger

    logger = MlbookLogger()
    assert logger.save_dir is None and logger.name == "mlbook"
    logger.log_hyperparams({"lr": 1.0})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("success")
