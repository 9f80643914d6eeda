"""Cost of provenance per run: before+after snapshots, and recording the files a run used.

A project of 1,000 tracked files (plus 50 MB of git-ignored data) is built in a
temporary directory. Timed, as medians over several runs:

- the before and after snapshots of one run on hidden refs (target: <= 0.2 s together);
- recording the files a run used, from a script importing shared code (target: <= 0.05 s);
- for context, a plain ``git add -A && git commit`` on a copy of the same project.

Usage: python benchmarks/bench_snapshot.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlbook.provenance.files import used_files
from mlbook.provenance.git import snapshot

FILES = 1000
IGNORED_MB = 50


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def build(root: Path) -> Path:
    """1,000 tracked files under Models/ and Data_processing/, 50 MB ignored in Datasets/."""
    models = root / "Models"
    for package in range(20):
        pkg = models / "common" / f"pkg{package:02d}"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        for module in range(39):
            body = "".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(40))
            (pkg / f"mod{module:02d}.py").write_text(body)
    (models / "common" / "__init__.py").write_text("")
    imports = "".join(f"from common.pkg{p:02d} import mod00, mod01\n" for p in range(10))
    (models / "E001_bench.py").write_text(imports + "def build():\n    import common.pkg19.mod38\n")
    proc = root / "Data_processing"
    proc.mkdir()
    tracked = 20 * 40 + 2
    for i in range(FILES - tracked - 1):
        (proc / f"step{i:03d}.py").write_text(f"STEP = {i}\n")
    (root / ".gitignore").write_text("Datasets/raw/\n.mlbook/\n")
    raw = root / "Datasets" / "raw"
    raw.mkdir(parents=True)
    chunk = os.urandom(1024 * 1024)
    for i in range(IGNORED_MB):
        (raw / f"blob{i:02d}.bin").write_bytes(chunk)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "project")
    count = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True).stdout
    assert len(count.splitlines()) == FILES, len(count.splitlines())
    return root


def time_snapshots(root: Path, repeat: int) -> list[float]:
    times = []
    outputs = root / "Models" / "outputs"
    for i in range(repeat):
        start = time.perf_counter()
        snapshot(root, f"bench-{i}", "before", f"[E001.1] before run bench-{i}")
        outputs.mkdir(exist_ok=True)  # what a run leaves behind
        (root / "Models" / f"results-{i}.json").write_text('{"acc": 0.9}\n')
        snapshot(root, f"bench-{i}", "after", "[E001.1] results: acc=0.9")
        times.append(time.perf_counter() - start)
    return times


def time_used_files(root: Path, repeat: int) -> tuple[list[float], int]:
    script = root / "Models" / "E001_bench.py"
    loaded = [str(p) for p in (root / "Models" / "common").glob("pkg0[0-4]/mod0*.py")]
    times, count = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        count = len(used_files(root, loaded, script, [root / "Models"]))
        times.append(time.perf_counter() - start)
    return times, count


def time_plain_commit(root: Path, repeat: int) -> list[float]:
    copy = root.parent / "copy"
    shutil.copytree(root, copy, symlinks=True)
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        (copy / "Models" / f"before-{i}.txt").write_text("x\n")
        git(copy, "add", "-A")
        git(copy, "commit", "-q", "-m", f"before {i}")
        (copy / "Models" / f"plain-results-{i}.json").write_text('{"acc": 0.9}\n')
        git(copy, "add", "-A")
        git(copy, "commit", "-q", "-m", f"after {i}")
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlbook-bench-") as tmp:
        root = build(Path(tmp) / "proj")
        snap = statistics.median(time_snapshots(root, args.repeat))
        used_times, used_count = time_used_files(root, args.repeat)
        used = statistics.median(used_times)
        plain = statistics.median(time_plain_commit(root, args.repeat))
    print(f"project: {FILES} tracked files, {IGNORED_MB} MB ignored; median of {args.repeat}")
    print(f"before+after snapshots (hidden refs):   {snap * 1000:7.1f} ms  (target <= 200 ms)")
    print(f"plain git add -A && git commit, twice:  {plain * 1000:7.1f} ms")
    print(f"ratio mlbook / plain git:               {snap / plain:7.2f}x")
    print(
        f"record used files ({used_count} files):          {used * 1000:7.1f} ms  (target <= 50 ms)"
    )
    ok = snap <= 0.2 and used <= 0.05
    print("within targets" if ok else "OVER TARGET")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
