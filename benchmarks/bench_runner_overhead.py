"""Runner overhead per version: `mlbook run` against `python script.py` and `guild run`.

Run: .venv/bin/python benchmarks/bench_runner_overhead.py [--repeat 7] [--files 1000]
Needs the Guild AI peer venv (bash benchmarks/setup_peers.sh) for the peer column;
`--no-guild` skips it.

The project is real: `mlbook init`, ``--files`` small tracked files committed in
git (Models/common/ and Data_processing/), provenance on (hidden-ref snapshots
before and after, the journal), and an experiment script that imports torch and
whose train hook returns at once. Timed, medians of ``--repeat`` new processes:

- the child's own work: Python runs the script (imports torch and mlbook,
  declares the experiment) and leaves with `os._exit`, as mlbook's child does;
- `mlbook run E001 -q` (one version, recorded), `mlbook run E003 -q` (the same,
  seeded: `Experiment(seed=0)`, so the child gets PYTHONHASHSEED and seeds torch)
  and `mlbook run E002 -q` (ten versions of the same script): overhead = wall time
  minus the child's own time per version;
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

from _common import HERE, median, time_interleaved

SCRIPT = """
import torch
import mlbook

exp = mlbook.Experiment(versions=VERSIONS SEED)

@exp.train
def train(run):
    return {"acc": 1.0}
"""

CHILD = "import os, runpy, sys; runpy.run_path(sys.argv[1]); os._exit(0)"

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
    unseeded = SCRIPT.replace(" SEED", "")
    (models / "E001_torch.py").write_text(unseeded.replace("VERSIONS", one))
    (models / "E002_ten.py").write_text(unseeded.replace("VERSIONS", ten))
    seeded = SCRIPT.replace(" SEED", ", seed=0")
    (models / "E003_seeded.py").write_text(seeded.replace("VERSIONS", one))
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
    commands: dict[str, list[str]] = {
        # what mlbook's child does for this script: import it, then leave with os._exit
        # (a plain `python script.py` also pays the interpreter's teardown with torch)
        "child": [sys.executable, "-c", CHILD, str(root / "Models/E001_torch.py")],
        "one": [mlbook, "-C", str(root), "run", "E001", "-q"],
        "seeded": [mlbook, "-C", str(root), "run", "E003", "-q"],
        "test": [mlbook, "-C", str(root), "run", "E001", "-q", "--mode", "test"],
    }
    if not args.no_guild:
        guild = HERE / ".venv-guild" / "bin" / "guild"
        if not guild.exists():
            sys.exit("Guild peer venv missing: run `bash benchmarks/setup_peers.sh` first")
        home = root.parent / "guild-home"
        home.mkdir(exist_ok=True)
        os.environ["GUILD_HOME"] = str(home)
        commands["guild"] = [str(guild), "run", "train.py", "-y"]
    times = time_interleaved(commands, args.repeat, cwd=str(root))
    ten = time_interleaved(
        {"child": commands["child"], "ten": [mlbook, "-C", str(root), "run", "E002", "-q"]},
        max(3, args.repeat // 2),
        cwd=str(root),
    )
    wall = {name: median(values[0]) for name, values in times.items()}
    cpu = {name: median(values[1]) for name, values in times.items()}
    ten_wall = median(ten["ten"][0]) - 10 * median(ten["child"][0])
    ten_cpu = median(ten["ten"][1]) - 10 * median(ten["child"][1])
    print(f"{args.files} tracked files, provenance on, a script importing torch;")
    print(f"medians of {args.repeat}, commands taking turns, warm cache")
    print(f"{'command':<44} {'wall':>9} {'cpu':>9}")
    labels = {
        "child": "python: run the script, os._exit (the child)",
        "one": "mlbook run E001 (1 version, recorded)",
        "seeded": "mlbook run E003 (the same, seed=0)",
        "test": "mlbook run E001 --mode test",
        "guild": "guild run train.py",
    }
    for name, label in labels.items():
        if name in wall:
            print(f"{label:<44} {wall[name] * 1000:>7.0f}ms {cpu[name] * 1000:>7.0f}ms")
    print(
        f"mlbook run, 1 version, beyond the child: wall {(wall['one'] - wall['child']) * 1000:.0f}"
        f" ms, cpu {(cpu['one'] - cpu['child']) * 1000:.0f} ms"
    )
    print(
        f"mlbook run, 1 seeded version, beyond the child: wall "
        f"{(wall['seeded'] - wall['child']) * 1000:.0f} ms,"
        f" cpu {(cpu['seeded'] - cpu['child']) * 1000:.0f} ms"
    )
    print(
        f"mlbook run, each of 10 versions, beyond the child: wall {ten_wall * 100:.0f} ms,"
        f" cpu {ten_cpu * 100:.0f} ms"
    )
    if "guild" in wall:
        print(
            f"guild run beyond the child: wall {(wall['guild'] - wall['child']) * 1000:.0f} ms,"
            f" cpu {(cpu['guild'] - cpu['child']) * 1000:.0f} ms;"
            f" guild run / mlbook run = {wall['guild'] / wall['one']:.2f}x (wall)"
        )
    # the same per round (each command beside the child run just before it): steadier
    # than a difference of medians when the machine's speed drifts
    paired = {
        name: median([b - a for a, b in zip(times["child"][0], times[name][0], strict=True)])
        for name in ("one", "seeded", "test")
    }
    print(
        "paired per round, beyond the child: "
        + ", ".join(f"{name} {value * 1000:.0f} ms" for name, value in paired.items())
    )
    over = max(wall["one"] - wall["child"], wall["seeded"] - wall["child"], ten_wall / 10)
    print(f"target (<= 150 ms beyond the child's own time): {'met' if over <= 0.15 else 'NOT met'}")


if __name__ == "__main__":
    main()
