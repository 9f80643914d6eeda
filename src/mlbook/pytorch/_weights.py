"""Pre-trained weights from ``Datasets/weights/``: load by name, record as input, warn if stale."""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mlbook._fs import sha256_file
from mlbook.errors import ExperimentError
from mlbook.pytorch._checkpoints import FORMAT

if TYPE_CHECKING:
    from mlbook.experiments.run import Run

__all__ = ["WEIGHT_SUFFIXES", "Pretrained", "load_pretrained"]

WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin")


@dataclass(frozen=True)
class Pretrained:
    """What :func:`load_pretrained` loaded: the file, its sha256, and staleness."""

    path: Path
    sha256: str
    source_run: str | None = None  # the earlier run that wrote these weights, if known
    stale: str | None = None  # the warning when that run's code changed since


def _weights_file(run: Run, name: str | Path) -> Path:
    text = str(name)
    candidate = Path(text)
    if candidate.is_absolute() or os.sep in text or "/" in text:
        path = candidate if candidate.is_absolute() else run.project_root / candidate
        if not path.is_file():
            raise ExperimentError(f"load_pretrained: no weights file {path}")
        return path
    folder = _weights_dir(run)
    direct = folder / text
    if direct.is_file():
        return direct
    for suffix in WEIGHT_SUFFIXES:
        if (folder / (text + suffix)).is_file():
            return folder / (text + suffix)
    have = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    listing = ", ".join(have) if have else "none"
    raise ExperimentError(
        f"load_pretrained: no weights {text!r} in {folder} (have: {listing}); "
        "put the file there or pass a path"
    )


def _weights_dir(run: Run) -> Path:
    from mlbook.project import Project

    try:
        return Project.open(run.project_root).datasets_dir / "weights"
    except Exception:
        return run.project_root / "Datasets" / "weights"


def _read_weights(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise ExperimentError(
                f"{path}: reading .safetensors needs the safetensors package; "
                "pip install safetensors"
            ) from exc
        return dict(load_file(str(path)))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ExperimentError(f"{path}: cannot read the weights ({exc})") from exc
    if isinstance(state, dict) and state.get("format") == FORMAT and "model" in state:
        state = state["model"]  # an mlbook checkpoint: take the model part
    if not isinstance(state, dict):
        raise ExperimentError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def _source_of(root: Path, digest: str) -> tuple[str, list[Any]] | None:
    """The earlier run that wrote a file with ``digest``, and the files it used."""
    from mlbook.errors import StoreError
    from mlbook.experiments.query import reading, run_files, run_with_artifact
    from mlbook.provenance.files import UsedFile

    path = root / ".mlbook" / "runs.sqlite"
    if not path.is_file():
        return None
    try:
        with reading(path) as store:
            run_id = run_with_artifact(store, digest, ("weights", "checkpoint"))
            if run_id is None:
                return None
            files = run_files(store, run_id)
    except StoreError:
        return None
    return run_id, [UsedFile(f.path, f.size, f.sha256) for f in files]


def load_pretrained(
    run: Run,
    model: torch.nn.Module,
    name: str | Path,
    *,
    strict: bool = True,
) -> Pretrained:
    """Load weights by name from ``Datasets/weights/`` into ``model`` and record them.

    ``name`` is a file name in ``Datasets/weights/`` (the suffix ``.pt``, ``.pth``,
    ``.safetensors`` or ``.bin`` may be left out) or a path (relative to the project
    root), e.g. the ``weights/model.pt`` of an earlier run. The file's sha256 is
    recorded as an input of the run (artifact kind ``input``). When the file is the
    weights (or a checkpoint) of an earlier run and the code that run used has
    changed since, a warning names the changed files (stale weights).

    Raises:
        ExperimentError: no such weights, an unreadable file, or (with ``strict``)
            keys that do not match the model.
    """
    path = _weights_file(run, name)
    digest = sha256_file(path)
    state = _read_weights(path)
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "mismatch"
        raise ExperimentError(
            f"{path}: the weights do not fit {type(model).__name__} ({first}); "
            "check the version's params, or pass strict=False"
        ) from exc
    run.artifact(path, kind="input")
    source_run, stale = warn_if_stale(run, path, digest)
    return Pretrained(path=path, sha256=digest, source_run=source_run, stale=stale)


def warn_if_stale(run: Run, path: Path, digest: str) -> tuple[str | None, str | None]:
    """Warn when ``path`` was written by an earlier run whose code has changed since.

    Returns ``(source run id, warning)``; either is ``None`` when there is none.
    """
    source = _source_of(run.project_root, digest)
    if source is None:
        return None, None
    from mlbook.provenance.stale import stale_files, stale_summary

    stale = stale_summary(stale_files(source[1], run.project_root), source[0])
    if stale is not None:
        warnings.warn(f"stale weights {path.name}: {stale}", stacklevel=3)
        print(f"[mlbook] warning: stale weights {path.name}: {stale}", file=sys.stderr)
    return source[0], stale
