"""Runner overhead per version: `mlbook run` against `python script.py` and `guild run`.

Run: .venv/bin/python benchmarks/bench_runner_overhead.py [--repeat 7] [--files 1000]
Needs the Guild AI peer venv (bash benchmarks/setup_peers.sh) for the peer column;
`--no-guild` skips it.

The project is real: `mlbook init`, ``--files`` small tracked files committed in
git (Models/common/ and Data_processing/), provenance on (hidden-ref snapshots
before and after, the journal), and an experiment script that imports torch and
whose train hook returns at once. Timed, medians of ``--repeat`` new processes:

- `python Models/E001_torch.py`: the child's own work (start Python, import
  torch and mlbook, declare the experiment);
- `mlbook run E001 -q` (one version, recorded) and `mlbook run E002 -q` (ten
  versions of the same script): overhead = wall time minus the child's own time
  per version;
- `mlbook run E001 --mode test`;
- `guild run train.py -y` on the same project (a plain script importing torch,
  with Guild's own run directory, source copy and run record).

Targets (issue 19): <= 150 ms beyond the child's own time per version.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import HERE, median, time_command

SCRIPT = """
import torch
import mlbook

exp = mlbook.Experiment(versions=VERSIONS)

@exp.train
def train(run):
    return {"acc": 1.0}
"""

GUILD_SCRIPT = """
import torch

lr = 0.1
print("acc: 1.0")
"""


def make_project(files: int) -> Path:
    from mlbook.scaffold import init_project

    root = Path(tempfile.mkdtemp()) / "bench"
    init_project(root)
    models = root / "Models"
    one = repr({"only": {"i": 0}})
    ten = repr({f"v{i}": {"i": i} for i in range(10)})
    (models / "E001_torch.py").write_text(SCRIPT.replace("VERSIONS", one))
    (models / "E002_ten.py").write_text(SCRIPT.replace("VERSIONS", ten))
    (root / "train.py").write_text(GUILD_SCRIPT)
    for index in range(files):
        area = "Models/common" if index % 2 else "Data_processing"
        path = root / area / f"module_{index:04d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"VALUE = {index}\n")
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b")
    env["GIT_COMMITTER_EMAIL"] = "b@b"
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "bench"], cwd=root, check=True, env=env)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--no-guild", action="store_true")
    args = parser.parse_args()
    mlbook = shutil.which("mlbook", path=str(Path(sys.executable).parent))
    if mlbook is None:
        sys.exit("mlbook is not installed in this venv")
    root = make_project(args.files)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as users run it: bytecode cached
    os.environ.update(GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b")
    os.environ.update(GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
    repeat = args.repeat
    child = median(time_command([sys.executable, str(root / "Models/E001_torch.py")], repeat))
    one = median(time_command([mlbook, "-C", str(root), "run", "E001", "-q"], repeat))
    test = median(
        time_command([mlbook, "-C", str(root), "run", "E001", "-q", "--mode", "test"], repeat)
    )
    ten = median(time_command([mlbook, "-C", str(root), "run", "E002", "-q"], max(3, repeat // 2)))
    print(f"{args.files} tracked files, provenance on, script imports torch; medians, warm cache")
    print(f"{'python Models/E001_torch.py (the child)':<44} {child * 1000:>8.0f} ms")
    print(f"{'mlbook run E001 (1 version, recorded)':<44} {one * 1000:>8.0f} ms")
    print(f"{'mlbook run E001 --mode test':<44} {test * 1000:>8.0f} ms")
    print(f"{'mlbook run E002 (10 versions, recorded)':<44} {ten * 1000:>8.0f} ms")
    over_one = one - child
    over_each = (ten - 10 * child) / 10
    print(f"mlbook overhead, 1 version: {over_one * 1000:.0f} ms beyond the child")
    print(f"mlbook overhead per version, 10 versions: {over_each * 1000:.0f} ms beyond the child")
    if not args.no_guild:
        guild = HERE / ".venv-guild" / "bin" / "guild"
        if not guild.exists():
            sys.exit("Guild peer venv missing: run `bash benchmarks/setup_peers.sh` first")
        home = root.parent / "guild-home"
        home.mkdir(exist_ok=True)
        os.environ["GUILD_HOME"] = str(home)
        os.chdir(root)
        peer = median(time_command([str(guild), "run", "train.py", "-y"], repeat))
        print(f"{'guild run train.py':<44} {peer * 1000:>8.0f} ms")
        print(f"guild overhead: {(peer - child) * 1000:.0f} ms beyond the child")
        print(f"guild run / mlbook run (1 version) = {peer / one:.2f}x")
    met = over_one <= 0.15 and over_each <= 0.15
    print(f"target (<= 150 ms beyond the child's own time): {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
