"""Bring back the data a past run used (``mlbook data restore RUN [DATASET]``).

For each dataset the run recorded (:mod:`mlbook.provenance.datasets`):

- **DVC-tracked** (a ``.dvc`` file or a ``dvc.lock`` stage): the file as it was in
  the run's before commit (``git show <before>:<file>``) is written back when it
  states the hash the run used, then ``dvc checkout`` (a subprocess; DVC is never
  imported) brings the data from DVC's cache. When the run trained on data that
  differed from its ``.dvc`` file (recorded ``modified``) but DVC's cache holds that
  version (``dvc add`` after the edit), the ``.dvc`` file is written with that hash
  instead. A failed checkout puts the file back as it was.
- **Not under DVC**: the files of the dataset that the before commit holds (its
  metadata: ``dataset.json``, and records when git tracks them) are restored with
  ``git restore --source=<before> --worktree``.

A dirty target is refused, so nothing unsaved is lost: data DVC has not recorded
(``dvc add`` or ``dvc checkout`` first), or, without DVC, files git does not hold.
Missing DVC, or a cache without the data (``dvc fetch`` first), is one clear line.
Afterwards the dataset is hashed again and must equal what the run recorded.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlbook._fs import atomic_write_text
from mlbook.errors import DatasetError

if TYPE_CHECKING:
    from mlbook.experiments.query import RunDataset, RunRecord
    from mlbook.project import Project
    from mlbook.provenance.datasets import Datasets

__all__ = ["DvcRunner", "Restored", "restore_data"]

#: runs ``dvc ARGS`` in a directory (the seam tests may replace)
DvcRunner = Callable[[Sequence[str], Path], "subprocess.CompletedProcess[str]"]
_CACHE_MISSING = ("missing", "not exist", "does not exist", "failed to checkout", "not in cache")


@dataclass(frozen=True)
class Restored:
    """One dataset brought back: its path, hash, file count and how (``dvc``, ``git``, ``same``)."""

    path: str
    hash: str
    nfiles: int | None
    how: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON output)."""
        return {
            "path": self.path,
            "hash": self.hash,
            "nfiles": self.nfiles,
            "how": self.how,
            "note": self.note,
        }


def _git(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args],
            cwd=project.root,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatasetError(f"cannot run git in {project.root}: {exc}") from exc


def restore_data(
    project: Project,
    run_id: str,
    dataset: str | Path | None = None,
    *,
    dvc: DvcRunner | None = None,
) -> list[Restored]:
    """Bring back the datasets run ``run_id`` used (or only ``dataset``).

    Args:
        project: the project.
        run_id: the run (a unique prefix is enough).
        dataset: one dataset path (root-relative); default: every dataset of the run.
        dvc: runs the ``dvc`` command (default: :func:`mlbook.provenance.dvc.run_dvc`).

    Raises:
        DatasetError: the run recorded no such dataset, a dirty target, no before
            commit, ``dvc`` missing, the DVC cache lacking the data, or a result that
            does not hash to what the run recorded.
        ExperimentError: no such run.
    """
    from mlbook.experiments.query import get_run, run_datasets
    from mlbook.provenance.datasets import Datasets
    from mlbook.provenance.dvc import run_dvc

    run = get_run(project, run_id)
    records = run_datasets(project, run.id)
    if not records:
        raise DatasetError(
            f"run {run.id} recorded no dataset (it ran before mlbook recorded datasets, "
            "or named none and DVC tracks none)"
        )
    if dataset is not None:
        path = Path(dataset)
        wanted = project.relative(path if path.is_absolute() else project.root / path)
        chosen = [r for r in records if r.path == wanted]
        if not chosen:
            used = ", ".join(r.path for r in records)
            raise DatasetError(f"run {run.id} recorded no dataset {wanted}; it used: {used}")
        records = chosen
    runner = dvc or (lambda args, cwd: run_dvc(args, cwd))
    restored = []
    for record in records:
        with Datasets(project) as datasets:
            if record.source:
                restored.append(_restore_dvc(project, run, record, datasets, runner))
            else:
                restored.append(_restore_git(project, run, record, datasets))
    return restored


def _now(datasets: Datasets, path: Path) -> tuple[str | None, bool]:
    """(hash now, dirty) of a dataset path; ``(None, False)`` when it does not exist."""
    datasets.refresh()  # a restored .dvc file changes what is tracked
    try:
        record = datasets.identity(path)
    except DatasetError:
        return None, False
    return record.hash, record.state == "modified"


def _before_text(project: Project, run: RunRecord, source: str) -> str | None:
    if not run.commit_before:
        return None
    done = _git(project, "show", f"{run.commit_before}:./{source}")
    return done.stdout if done.returncode == 0 else None


def _restore_dvc(
    project: Project, run: RunRecord, record: RunDataset, datasets: Datasets, dvc: DvcRunner
) -> Restored:
    from mlbook.provenance.dvc import dvc_root

    assert record.source is not None
    target = project.root / record.path
    now, dirty = _now(datasets, target)
    if now == record.hash:
        return Restored(
            record.path, record.hash, record.nfiles, "same", "already as the run had it"
        )
    if record.state == "missing":
        raise DatasetError(
            f"run {run.id} did not have {record.path} checked out; there is no data to restore"
        )
    if dirty:
        raise DatasetError(
            f"{record.path} has changes DVC has not recorded; keep them with "
            f"`dvc add {record.path}` (or `dvc commit`), or drop them with `dvc checkout "
            f"{record.path}`, then restore again"
        )
    source = project.root / record.source
    old_text = source.read_text(encoding="utf-8") if source.is_file() else None
    md5 = record.hash.removeprefix("md5:")
    if not _cached(project, md5):
        raise DatasetError(
            f"the DVC cache lacks the data of {record.path} ({record.short}); run "
            f"`dvc fetch` (or `dvc pull`) first, then restore again"
        )
    if now is not None and not _cached(project, now.removeprefix("md5:")):
        raise DatasetError(
            f"{record.path} now ({_short(now)}) is not in DVC's cache, and checking out "
            f"another version would delete it; `dvc commit {record.source}` first"
        )
    text = _before_text(project, run, record.source)
    if text is None or not _states(project, source, text, record.path, md5):
        text = _rewritten(project, run, record, old_text, md5)
    repo = dvc_root(project.root) or project.root
    atomic_write_text(source, text)
    target_arg = str(source if source.suffix == ".dvc" else target)
    try:
        done = dvc(["checkout", "--force", target_arg], repo)
    except BaseException:
        _put_back(source, old_text)
        raise
    if done.returncode != 0:
        _put_back(source, old_text)
        said = (done.stderr or done.stdout or "").strip()
        if any(word in said.lower() for word in _CACHE_MISSING):
            raise DatasetError(
                f"the DVC cache lacks the data of {record.path} ({record.short}); run "
                f"`dvc fetch` (or `dvc pull`) first, then restore again"
            )
        last = said.splitlines()[-1] if said else f"exit code {done.returncode}"
        raise DatasetError(f"dvc checkout {target_arg} failed: {last}")
    after, _ = _now(datasets, target)
    if after != record.hash:
        raise DatasetError(
            f"after dvc checkout {record.path} is {after} instead of {record.hash}, what run "
            f"{run.id} used; check `dvc status`"
        )
    nfiles = datasets.identity(target).nfiles
    return Restored(record.path, record.hash, nfiles, "dvc", f"{record.source} from the run")


def _short(value: str) -> str:
    kind, _, rest = value.partition(":")
    return f"{kind}:{rest[:12]}"


def _put_back(source: Path, text: str | None) -> None:
    if text is not None:
        atomic_write_text(source, text)


def _states(project: Project, source: Path, text: str, path: str, md5: str) -> bool:
    """True when ``text`` (a .dvc or dvc.lock) states ``md5`` for ``path``."""
    import tempfile

    from mlbook.errors import DvcFileError
    from mlbook.provenance.dvc import read_dvc_file, read_dvc_lock

    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / source.name
        copy.write_text(text, encoding="utf-8")
        shown = project.relative(source)
        try:
            # parse as if it sat where the real file is: paths are relative to it
            if source.suffix == ".dvc":
                outs = read_dvc_file(copy, Path(scratch))
            else:
                outs = [o for s in read_dvc_lock(copy, Path(scratch)) for o in s.outs]
        except DvcFileError:
            return False
    base = Path(shown).parent
    for out in outs:
        full = (base / out.path).as_posix() if base.as_posix() != "." else out.path
        if full == path and out.md5 == md5:
            return True
    return False


def _rewritten(
    project: Project, run: RunRecord, record: RunDataset, text: str | None, md5: str
) -> str:
    """The current ``.dvc`` file stating ``md5``, when DVC's cache holds that version."""
    import yaml

    assert record.source is not None
    if text is None or not record.source.endswith(".dvc") or not _cached(project, md5):
        raise DatasetError(
            f"run {run.id} trained on {record.path} as {record.short}, which neither its before "
            "commit's DVC files state nor DVC's cache holds (the edit was never `dvc add`-ed); "
            "it cannot be restored"
        )
    data = yaml.safe_load(text)
    base = Path(record.source).parent
    for out in data.get("outs", []):
        full = (base / str(out.get("path", ""))).as_posix()
        if full == record.path:
            out["md5"] = md5
            if record.size is not None:
                out["size"] = record.size
            if record.nfiles is not None and md5.endswith(".dir"):
                out["nfiles"] = record.nfiles
    return str(yaml.safe_dump(data, sort_keys=False))


def _cache_dir(repo: Path) -> Path:
    """DVC's cache directory: ``[cache] dir`` of ``.dvc/config(.local)``, else ``.dvc/cache``."""
    import configparser

    for name in ("config.local", "config"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            parser.read(repo / ".dvc" / name, encoding="utf-8")
        except (OSError, configparser.Error):
            continue
        value = parser.get("cache", "dir", fallback=None)
        if value:
            path = Path(value.strip().strip("'\""))
            return path if path.is_absolute() else (repo / ".dvc" / path).resolve()
    return repo / ".dvc" / "cache"


def _object(cache: Path, md5: str) -> Path | None:
    for path in (cache / "files" / "md5" / md5[:2] / md5[2:], cache / md5[:2] / md5[2:]):
        if path.is_file():
            return path
    return None


def _cached(project: Project, md5: str) -> bool:
    """True when DVC's cache holds ``md5`` whole (a ``.dir``: every file it lists)."""
    import json

    from mlbook.provenance.dvc import dvc_root

    repo = dvc_root(project.root)
    if repo is None:
        return False
    cache = _cache_dir(repo)
    found = _object(cache, md5)
    if found is None:
        return False
    if not md5.endswith(".dir"):
        return True
    try:
        entries = json.loads(found.read_text(encoding="utf-8"))
        return all(_object(cache, str(entry["md5"])) is not None for entry in entries)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _restore_git(
    project: Project, run: RunRecord, record: RunDataset, datasets: Datasets
) -> Restored:
    target = project.root / record.path
    now, _ = _now(datasets, target)
    if now == record.hash:
        return Restored(
            record.path, record.hash, record.nfiles, "same", "already as the run had it"
        )
    if not run.commit_before:
        reason = f" ({run.commit_reason})" if run.commit_reason else ""
        raise DatasetError(
            f"run {run.id} has no before commit{reason}; {record.path} is not under DVC, so "
            "there is nothing to restore it from"
        )
    status = _git(project, "status", "--porcelain", "--", record.path)
    if status.returncode != 0:
        raise DatasetError(f"git status failed in {project.root}: {status.stderr.strip()}")
    if status.stdout.strip():
        raise DatasetError(
            f"{record.path} has changes git does not hold (see `git status {record.path}`); "
            "commit or stash them first, then restore again"
        )
    done = _git(
        project, "restore", f"--source={run.commit_before}", "--worktree", "--", record.path
    )
    if done.returncode != 0:
        raise DatasetError(
            f"git restore of {record.path} from {run.commit_before[:7]} failed: "
            f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
        )
    after, _ = _now(datasets, target)
    note = "" if after == record.hash else "the before commit holds only part of it (metadata)"
    nfiles = datasets.identity(target).nfiles if target.exists() else None
    return Restored(record.path, after or record.hash, nfiles, "git", note)
