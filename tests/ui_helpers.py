"""A small real project for the UI tests: git snapshots, a run store, a journal.

Everything is real (git, SQLite, the journal code); runs are written straight
into the store instead of training, so building the project takes about a second.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path

from mlbook.experiments.series import chunk_of
from mlbook.experiments.store import Store
from mlbook.project import Project
from mlbook.provenance.git import snapshot
from mlbook.provenance.journal import add_entry, record_step
from mlbook.scaffold import init_project

SCRIPT = "Models/E001_digits.py"
SHARED = "Models/common/training.py"


def _file_row(root: Path, path: str) -> tuple[str, int, str]:
    data = (root / path).read_bytes()
    return path, len(data), hashlib.sha256(data).hexdigest()


def make_project(root: Path) -> tuple[Project, dict[str, str]]:
    """A project with 4 runs of E001 and 1 of E002; returns it and run IDs by name.

    Names: ``narrow`` and ``wide`` (completed, the shared code differs between
    them), ``broken`` (failed, with a traceback holding HTML), ``live`` (running,
    owned by this process), ``other`` (E002).
    """
    project = init_project(root).project
    (root / "Models" / "common").mkdir(parents=True, exist_ok=True)
    (root / SCRIPT).write_text("from common.training import fit\n\nWIDTH = 16\n")
    (root / SHARED).write_text("def fit(lr):\n    return lr * 1\n")
    journal = project.journal_path
    add_entry(journal, "E001", "digits <cnn> & friends", "Does width help?")
    add_entry(journal, "E002", "other idea")
    ids: dict[str, str] = {}
    plan = [
        ("narrow", "E001", {"lr": 0.01, "width": 16, "opt": "sgd"}, "completed", 0.91),
        ("wide", "E001", {"lr": 0.01, "width": 64, "opt": "adam"}, "completed", 0.95),
        ("broken", "E001", {"lr": 1.0, "width": 64, "opt": "adam"}, "failed", math.nan),
        ("live", "E001", {"lr": 0.001, "width": 32, "opt": "sgd"}, "running", 0.0),
        ("other", "E002", {"lr": 0.1, "depth": 3}, "completed", 0.5),
    ]
    with Store.for_project(project) as store:
        for index, (name, exp, params, status, acc) in enumerate(plan):
            if name == "wide":  # the shared code changes between narrow and wide
                (root / SHARED).write_text("def fit(lr):\n    return lr * 2  # doubled\n")
            run_id = f"20260101-00000{index}-{name[:2]}{index:04d}"
            pk, run_id = store.create_run(
                experiment=exp,
                version=name,
                mode="run",
                params=params,
                run_id=run_id,
                outputs=f"Models/outputs/{exp}/{name}/{run_id}",
            )
            ids[name] = run_id
            before = snapshot(root, run_id, "before", f"[{exp}] before run {name}").commit
            store.set_provenance(
                run_id,
                commit_before=before,
                data_version=f"metadata:{'abc' if name != 'wide' else 'def'}",
                packages={"torch": "2.13.0"},
            )
            store.add_files(run_id, [_file_row(root, SCRIPT), _file_row(root, SHARED)])
            steps = list(range(200))
            start = time.time()
            losses = [2.0 / (1 + s * (index + 1) / 20) for s in steps]
            if name == "narrow":
                losses[120] = 50.0  # a spike the downsampling must keep
            for first in range(0, len(steps), 40):
                part = steps[first : first + 40]
                store.add_metrics(
                    pk,
                    [
                        chunk_of(
                            "loss", part, losses[first : first + 40], [start + s for s in part]
                        ),
                        chunk_of(
                            "acc", part, [acc * s / 200 for s in part], [start + s for s in part]
                        ),
                    ],
                )
            output = root / f"Models/outputs/{exp}/{name}/{run_id}"
            output.mkdir(parents=True)
            (output / "report.txt").write_text(f"report of {name}\n")
            store.add_artifact(
                run_id, *_file_row(root, f"Models/outputs/{exp}/{name}/{run_id}/report.txt"), "file"
            )
            if status == "running":
                store.db.execute(
                    "UPDATE runs SET runner_pid = ? WHERE id = ?", (os.getpid(), run_id)
                )
                continue
            error = (
                "Traceback (most recent call last):\n  ValueError: <script>alert(1)</script>"
                if status == "failed"
                else None
            )
            metrics = {"acc": acc, "loss": losses[-1]}
            store.finish_run(run_id, status, metrics, error)
            record_step(journal, exp, name, run_id, "done" if status == "completed" else status,
                        {"acc": acc} if acc == acc else {}, before, None)  # fmt: skip
    return Project.open(root), ids
