"""The end-to-end demo: a new project, used the way a practitioner would.

Each step runs the real `mlbook` command in a temporary directory and shows its
output. Run through `bash scripts/demo.sh` (which sets up the environment).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MLBOOK = str(Path(sys.executable).parent / "mlbook")
STEP = 0
COLOUR = sys.stdout.isatty()


def _style(code: str, text: str) -> str:
    return f"\033[{code}m{text}\033[0m" if COLOUR else text


def step(title: str) -> None:
    global STEP
    STEP += 1
    print("\n" + _style("1;36", f"== {STEP}. {title}"), flush=True)


def sh(*args: str, cwd: Path, expect: int = 0) -> str:
    shown = " ".join(shlex.quote(a) for a in args)
    print(_style("2", f"$ {shown}"), flush=True)
    argv = [MLBOOK, *args[1:]] if args[0] == "mlbook" else list(args)
    env = {**os.environ, "COLUMNS": "110"}
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env)
    output = done.stdout + done.stderr
    print(output.rstrip("\n"), flush=True)
    if done.returncode != expect:
        sys.exit(f"demo failed: `{shown}` exited {done.returncode}, expected {expect}")
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the demo project")
    args = parser.parse_args()
    started = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="mlbook-demo-"))
    demo = base / "demo"
    try:
        step("Create a project")
        sh("mlbook", "init", "demo", cwd=base)

        step("Check the boundaries of a clean project")
        sh("mlbook", "check", cwd=demo)

        step("Plant a boundary violation: training code importing deployment code")
        bad = demo / "Models" / "E999_bad.py"
        bad.write_text("from Deployment import server\n")
        print(f"wrote {bad.relative_to(demo)}: from Deployment import server")
        sh("mlbook", "check", cwd=demo, expect=1)
        bad.unlink()
        sh("mlbook", "check", cwd=demo)

        step("Done")
        print(f"Everything ran in {time.perf_counter() - started:.1f} s.")
        print(
            f"Project: {demo}" if args.keep else "The demo project was removed (--keep keeps it)."
        )
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
