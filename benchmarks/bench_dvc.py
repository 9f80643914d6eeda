"""DVC-tracked datasets: the cost of recording them per run, and the native .dir hash vs DVC.

Builds a `git init` + `dvc init` project in a temporary directory and measures:

1. capture (what `mlbook run` does at each run start): 100 datasets of 20 files,
   each `dvc add`-ed (100 .dvc files), nothing changed since the last capture
   (target: <= 50 ms); also the first capture with only DVC's state to help, and
   with no cache at all (every file read);
2. the native `.dir` md5 of a 2,000-file directory (checked equal to DVC's), side
   by side with `dvc status` of the same directory, both as fresh processes taking
   turns: the native hash with no cache at all (every file read) and with DVC's
   state; `dvc status` with its warm state (target: native no slower).

Usage: python benchmarks/bench_dvc.py [--repeat N]   (needs `dvc`: pip install 'mlbook[dvc]')
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import median, time_call, time_interleaved

from mlbook.project import Project
from mlbook.provenance.datahash import HashCache, content_hash
from mlbook.provenance.datasets import capture_datasets
from mlbook.provenance.dvc import read_dvc_file
from mlbook.scaffold import init_project

DATASETS, PER_DATASET, BIG = 100, 20, 2000

NATIVE = """
import sys
from pathlib import Path
from mlbook.provenance.datahash import HashCache, content_hash
from mlbook.provenance.dvc import DvcState
state = DvcState(Path(sys.argv[2])) if sys.argv[3] == "state" else None
print(content_hash(Path(sys.argv[1]), "md5", HashCache(None), state).md5)
"""


def sh(cwd: Path, *args: str) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)


def build(base: Path, big: bool) -> Project:
    """100 datasets of 20 files, or (``big``) one dataset of 2,000 files; all `dvc add`-ed."""
    project = init_project(base / ("big" if big else "many")).project
    root = project.root
    names = ["big"] if big else [f"d{index:03d}" for index in range(DATASETS)]
    for name in names:
        data = root / "Datasets" / name / ("images" if big else "")
        data.mkdir(parents=True)
        for item in range(BIG if big else PER_DATASET):
            if big:
                (data / f"{item:05d}.bin").write_bytes(os.urandom(4096))
            else:
                (data / f"{item:02d}.txt").write_text(f"dataset {name} item {item}\n" * 20)
    sh(root, "dvc", "init", "-q")
    sh(root, "dvc", "add", "-q", *(f"Datasets/{name}" for name in names))
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "data")
    return Project.open(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    if shutil.which("dvc") is None:
        sys.exit("dvc is not installed: pip install 'mlbook[dvc]'")
    base = Path(tempfile.mkdtemp(prefix="mlbook-bench-dvc-"))
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ["DVC_SITE_CACHE_DIR"] = str(base / "dvc-site")
    for key, value in {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b.invalid"}.items():
        os.environ.setdefault(key, value)
        os.environ.setdefault(key.replace("AUTHOR", "COMMITTER"), value)
    try:
        project = build(base, big=False)
        cache_file = project.state_dir / "cache" / "datahash.sqlite"
        print(f"project: {DATASETS} datasets x {PER_DATASET} files, each dvc add-ed")

        def cold_state() -> None:  # only DVC's state to help
            cache_file.unlink(missing_ok=True)
            capture_datasets(project)

        first = time_call(cold_state, 3)
        records = capture_datasets(project)
        assert len(records) == DATASETS and all(r.state == "clean" for r in records)
        warm = time_call(lambda: capture_datasets(project), args.repeat)
        os.environ["DVC_SITE_CACHE_DIR"] = str(base / "no-dvc-state")

        def cold() -> None:  # nothing cached: every file read
            cache_file.unlink(missing_ok=True)
            capture_datasets(project)

        nothing = time_call(cold, 3)
        os.environ["DVC_SITE_CACHE_DIR"] = str(base / "dvc-site")
        print(
            f"capture, nothing changed:    {median(warm) * 1000:7.1f} ms  (target <= 50 ms)\n"
            f"capture, first (DVC state):  {median(first) * 1000:7.1f} ms\n"
            f"capture, no cache at all:    {median(nothing) * 1000:7.1f} ms"
        )

        root = build(base, big=True).root
        big = root / "Datasets" / "big"
        (out,) = read_dvc_file(root / "Datasets" / "big.dvc", root)
        native = content_hash(big, "md5", HashCache(None))
        assert native is not None and native.md5 == out.md5, (native, out)
        print(f".dir md5 of {BIG} files: native {native.md5} == DVC's {out.md5}")
        in_process = time_call(lambda: content_hash(big, "md5", HashCache(None)), args.repeat)
        python = sys.executable
        commands = {
            "native, no cache (process)": [python, "-c", NATIVE, str(big), str(root), "none"],
            "native, DVC state (process)": [python, "-c", NATIVE, str(big), str(root), "state"],
            "dvc status Datasets/big.dvc": ["dvc", "status", "Datasets/big.dvc"],
        }
        timed = time_interleaved(commands, args.repeat, cwd=str(root))
        print(f"native, no cache (in process): {median(in_process) * 1000:7.1f} ms")
        for name, (wall, cpu) in timed.items():
            print(
                f"{name:<30} {median(wall) * 1000:7.1f} ms wall  {median(cpu) * 1000:7.1f} ms CPU"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
