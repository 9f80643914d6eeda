"""Export and load of a small digits CNN: mlbook against torch.package and MLflow.

A temporary project gets ``Models/E001_digits_cnn.py`` (a small CNN, shared code in
``Models/common/training.py``), trained once on scikit-learn's digits. Timed, as
medians of fresh processes, side by side in one run:

- ``import torch`` alone (the framework's own import time);
- ``mlbook export`` from the command line, verification in a clean child included
  (target: at most 2 s beyond the torch import);
- ``mlbook.load`` + one prediction, after ``import torch`` (target: at most 0.2 s);
- ``torch.package``: ``PackageExporter`` (script and common code interned) and
  ``PackageImporter.load_pickle`` + one prediction, after ``import torch``;
- MLflow: ``mlflow.pytorch.save_model(code_paths=...)`` and ``load_model`` + one
  prediction, after ``import torch, mlflow.pytorch`` (in benchmarks/.venv-mlflow,
  which needs ``pip install torch==2.13.0``; skipped when missing).

Usage: python benchmarks/bench_export.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MLFLOW_PY = HERE / ".venv-mlflow" / "bin" / "python"

TRAINING = """
import torch


def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return x, torch.tensor(data.target)


def fit(model, x, y, steps, lr):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return float(loss)
"""

SCRIPT = """
import torch
import mlbook
from common.training import digits, fit

exp = mlbook.Experiment(base={"lr": 0.01, "steps": 30}, versions={"small": {"width": 16}})


class Net(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(width, width * 2, 3, padding=1)
        self.head = torch.nn.Linear(width * 2 * 16, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.relu(self.conv2(x))
        return self.head(x.flatten(1))


@exp.model
def build(p):
    return Net(p.width)


@exp.train
def train(run, model):
    x, y = digits()
    loss = fit(model, x, y, run.params.steps, run.params.lr)
    run.save_weights(model)
    mlbook.ClassEncoding.contiguous([str(i) for i in range(10)]).save(run.path("labels.json"))
    acc = float((model(x).argmax(1) == y).float().mean())
    return {"loss": loss, "acc": acc}


@exp.sample
def sample(p):
    return torch.zeros(1, 1, 8, 8)


@exp.predict
def predict(model, inputs):
    return model(inputs).softmax(-1)
"""

# Build the trained model in a plain process (Models/ on sys.path) for the peers.
BUILD = """
import sys, importlib
sys.path.insert(0, {models!r})
import torch
script = importlib.import_module("E001_digits_cnn")
model = script.Net(16)
model.load_state_dict(torch.load({weights!r}, weights_only=True))
model.eval()
"""

TORCH_IMPORT = "import torch"

MLBOOK_LOAD = """
import time, torch
t = time.perf_counter()
import mlbook
m = mlbook.load({bundle!r})
m.predict(torch.zeros(1, 1, 8, 8))
print(time.perf_counter() - t)
"""

TP_EXPORT = (
    BUILD
    + """
import time
from torch.package import PackageExporter
t = time.perf_counter()
with PackageExporter({out!r}) as exporter:
    exporter.extern(["torch.**", "mlbook.**", "sklearn.**", "numpy.**"])
    exporter.intern(["E001_digits_cnn", "common.**"])
    exporter.save_pickle("model", "model.pkl", model)
print(time.perf_counter() - t)
"""
)

TP_LOAD = """
import time, torch
t = time.perf_counter()
from torch.package import PackageImporter
model = PackageImporter({out!r}).load_pickle("model", "model.pkl")
with torch.no_grad():
    model(torch.zeros(1, 1, 8, 8)).softmax(-1)
print(time.perf_counter() - t)
"""

MLFLOW_SAVE = (
    BUILD
    + """
import time
import mlflow.pytorch
t = time.perf_counter()
mlflow.pytorch.save_model(
    model, {out!r}, code_paths=[{script!r}, {common!r}], serialization_format="pickle"
)
print(time.perf_counter() - t)
"""
)

MLFLOW_LOAD = """
import time, torch, mlflow.pytorch
t = time.perf_counter()
model = mlflow.pytorch.load_model({out!r})
with torch.no_grad():
    model(torch.zeros(1, 1, 8, 8)).softmax(-1)
print(time.perf_counter() - t)
"""


def wall(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def inner(python: str | Path, code: str, cwd: Path) -> float:
    """Run ``code`` in a fresh process; it prints the seconds of the part that counts.

    The script imports mlbook (for ``mlbook.Experiment``), so the peers' processes
    get mlbook's source on ``PYTHONPATH``; nothing of mlbook runs in their timings.
    """
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    done = subprocess.run(
        [str(python), "-c", code], cwd=cwd, capture_output=True, text=True, env=env
    )
    if done.returncode:
        raise SystemExit(done.stderr)
    return float(done.stdout.strip().splitlines()[-1])


def setup(root: Path) -> tuple[Path, Path]:
    from mlbook.experiments.runner import run_experiments
    from mlbook.experiments.store import Store
    from mlbook.scaffold import init_project

    project = init_project(root / "proj").project
    (project.models_dir / "common").mkdir(exist_ok=True)
    (project.models_dir / "common" / "__init__.py").write_text("")
    (project.models_dir / "common" / "training.py").write_text(TRAINING)
    (project.models_dir / "E001_digits_cnn.py").write_text(SCRIPT)
    result = run_experiments(project, ["E001"], observers=[])
    assert result.ok, result.runs[0].error
    with Store.for_project(project) as store:
        (weights,) = store.db.execute("SELECT weights FROM runs").fetchone()
    return project.root, project.root / weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.repeat
    work = Path(tempfile.mkdtemp(prefix="mlbook-bench-export-"))
    try:
        root, weights = setup(work)
        models = root / "Models"
        py = sys.executable
        fmt = {
            "models": str(models),
            "weights": str(weights),
            "script": str(models / "E001_digits_cnn.py"),
            "common": str(models / "common"),
        }
        results: dict[str, list[float]] = {}

        def record(name: str, values: list[float]) -> None:
            results[name] = values
            print(f"{name:<34} median {statistics.median(values):7.3f} s  (n={len(values)})")

        record("import torch", [wall([py, "-c", TORCH_IMPORT], work) for _ in range(n)])
        bundle = root / "Deployment" / "exports" / "E001-small"
        record(
            "mlbook export (CLI, verified)",
            [
                wall([py, "-m", "mlbook", "export", "E001", "-v", "small", "-q", "--force"], root)
                for _ in range(n)
            ],
        )
        record(
            "mlbook.load + predict",
            [inner(py, MLBOOK_LOAD.format(bundle=str(bundle)), work) for _ in range(n)],
        )
        tp = work / "model.pt.zip"
        record(
            "torch.package export",
            [inner(py, TP_EXPORT.format(out=str(tp), **fmt), work) for _ in range(n)],
        )
        record(
            "torch.package load + predict",
            [inner(py, TP_LOAD.format(out=str(tp)), work) for _ in range(n)],
        )
        have_mlflow = (
            MLFLOW_PY.exists()
            and subprocess.run(
                [str(MLFLOW_PY), "-c", "import torch, mlflow"], capture_output=True
            ).returncode
            == 0
        )
        if have_mlflow:
            saves, loads = [], []
            for i in range(n):
                out = work / f"mlflow-model-{i}"
                saves.append(inner(MLFLOW_PY, MLFLOW_SAVE.format(out=str(out), **fmt), work))
                loads.append(inner(MLFLOW_PY, MLFLOW_LOAD.format(out=str(out)), work))
            record("mlflow.pytorch.save_model", saves)
            record("mlflow.pytorch.load_model + predict", loads)
            record(
                "import torch, mlflow.pytorch",
                [
                    wall([str(MLFLOW_PY), "-c", "import torch, mlflow.pytorch"], work)
                    for _ in range(n)
                ],
            )
        else:
            print("(MLflow skipped: benchmarks/.venv-mlflow with torch==2.13.0 not found)")
        med = {k: statistics.median(v) for k, v in results.items()}
        beyond = med["mlbook export (CLI, verified)"] - med["import torch"]
        print()
        print(f"export beyond torch import: {beyond:.3f} s (target <= 2 s)")
        print(f"load beyond torch import:   {med['mlbook.load + predict']:.3f} s (target <= 0.2 s)")
        print(
            "export: mlbook beyond torch import (verified, fresh process) vs torch.package "
            f"export call alone: {beyond / med['torch.package export']:.2f}x"
        )
        if have_mlflow:
            print(
                "export: mlbook beyond torch import vs mlflow save_model call alone: "
                f"{beyond / med['mlflow.pytorch.save_model']:.2f}x"
            )
        print(
            "load ratio torch.package / mlbook: "
            f"{med['torch.package load + predict'] / med['mlbook.load + predict']:.2f}x"
        )
        if have_mlflow:
            print(
                "load ratio mlflow / mlbook: "
                f"{med['mlflow.pytorch.load_model + predict'] / med['mlbook.load + predict']:.2f}x"
            )
        print(json.dumps({k: round(v, 4) for k, v in med.items()}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
