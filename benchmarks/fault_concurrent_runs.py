"""Fault test: concurrent `mlbook run` processes must never lose a commit or snapshot a temp file.

Several runners (threads, each starting `python -m mlbook run` subprocesses one
after another) run experiments of one small project at the same time, for a
number of rounds, once with `[git] commits = "refs"` and once with `"branch"`.
Each experiment's train hook returns at once, so the runs are mostly provenance:
journal updates and before/after snapshots racing each other. Then it counts:

- lost commits: a run-mode run without its before or after commit;
- temp files in snapshots: paths of `git ls-tree -r` of every before/after commit
  (and, in branch mode, of every commit on the branch) that are temporary files
  (`*.tmp`) or mlbook state (`.mlbook/`);
- silent losses: runs without a commit whose `commit_reason` is empty;
- failed commands (exit code not 0) and `warning:` lines printed.

Target: 0 / 0 / 0, and every command exits 0.

Usage: python benchmarks/fault_concurrent_runs.py [--runners 4] [--rounds 10]
       [--mode refs|branch|both] [--short] [--keep]
`--short` is 2 runners x 2 rounds (what tests/test_provenance_fault.py runs).
Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = """import mlbook

exp = mlbook.Experiment(versions={"only": {"k": 1}})


@exp.train
def train(run):
    return {"acc": 1.0}
"""


@dataclass
class Outcome:
    """What one mode's rounds produced."""

    mode: str
    commands: int = 0
    failed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    runs: int = 0
    lost: list[str] = field(default_factory=list)
    silent: list[str] = field(default_factory=list)
    temp_paths: set[str] = field(default_factory=set)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.failed or self.lost or self.silent or self.temp_paths)


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    return done.stdout


def make_project(base: Path, mode: str, runners: int) -> Path:
    """A fresh project with one trivial experiment per runner, committed."""
    from mlbook.scaffold import init_project

    root = base / f"proj-{mode}"
    init_project(root)
    config = root / "mlbook.toml"
    text = config.read_text().replace('commits = "refs"', f'commits = "{mode}"')
    config.write_text(text)
    for index in range(1, runners + 1):
        (root / "Models" / f"E{index:03d}_quick.py").write_text(SCRIPT)
    git(root, "config", "user.name", "fault test")
    git(root, "config", "user.email", "fault@mlbook.invalid")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "start")
    return root


def run_rounds(root: Path, runners: int, rounds: int, outcome: Outcome) -> None:
    lock = threading.Lock()

    def runner(index: int) -> None:
        for _ in range(rounds):
            argv = [sys.executable, "-m", "mlbook", "-C", str(root), "run", f"E{index:03d}", "-q"]
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            lines = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
            with lock:
                outcome.commands += 1
                outcome.warnings.extend(lines)
                if done.returncode != 0:
                    tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                    outcome.failed.append(f"E{index:03d} exit {done.returncode}: {tail}")

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(1, runners + 1)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcome.seconds = time.perf_counter() - start


def is_temp(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".tmp") or path.startswith(".mlbook/") or "/.mlbook/" in path


def inspect(root: Path, outcome: Outcome) -> None:
    db = sqlite3.connect(f"file:{root / '.mlbook' / 'runs.sqlite'}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT id, commit_before, commit_after, commit_reason FROM runs WHERE mode = 'run'"
    ).fetchall()
    db.close()
    outcome.runs = len(rows)
    commits: set[str] = set()
    for run_id, before, after, reason in rows:
        for stage, commit in (("before", before), ("after", after)):
            if commit:
                commits.add(commit)
            else:
                outcome.lost.append(f"{run_id} {stage}: {reason or '(no reason)'}")
        if (not before or not after) and not reason:
            outcome.silent.append(run_id)
    refs = git(root, "for-each-ref", "--format=%(objectname)", "refs/mlbook/runs")
    commits.update(refs.split())
    if outcome.mode == "branch":
        commits.update(git(root, "rev-list", "HEAD").split())
    for commit in sorted(commits):
        names = git(root, "ls-tree", "-r", "--name-only", commit).splitlines()
        outcome.temp_paths.update(name for name in names if is_temp(name))


def report(outcome: Outcome, expected: int) -> None:
    print(
        f"{outcome.mode:<7} runs {outcome.runs}/{expected}  commands {outcome.commands} "
        f"({len(outcome.failed)} failed)  {outcome.seconds:.1f} s"
    )
    print(
        f"        lost commits {len(outcome.lost)}  temp files in snapshots "
        f"{len(outcome.temp_paths)}  no commit and no reason {len(outcome.silent)}  "
        f"warnings {len(outcome.warnings)}"
    )
    for line in [*outcome.failed, *outcome.lost, *sorted(outcome.temp_paths), *outcome.silent][:10]:
        print(f"          {line}")
    for line in sorted(set(outcome.warnings))[:5]:
        print(f"          {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runners", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--mode", choices=["refs", "branch", "both"], default="both")
    parser.add_argument("--short", action="store_true", help="2 runners x 2 rounds")
    parser.add_argument("--keep", action="store_true", help="keep the projects (path printed)")
    args = parser.parse_args()
    if args.short:
        args.runners, args.rounds = 2, 2
    base = Path(tempfile.mkdtemp(prefix="mlbook-fault-"))
    modes = ["refs", "branch"] if args.mode == "both" else [args.mode]
    expected = args.runners * args.rounds
    print(f"{args.runners} concurrent runners x {args.rounds} rounds, modes: {', '.join(modes)}")
    ok = True
    try:
        for mode in modes:
            root = make_project(base, mode, args.runners)
            outcome = Outcome(mode)
            run_rounds(root, args.runners, args.rounds, outcome)
            inspect(root, outcome)
            report(outcome, expected)
            ok = ok and outcome.ok and outcome.runs == expected
    finally:
        if args.keep:
            print(f"projects kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print("targets met: 0 lost, 0 temp files, 0 silent" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
