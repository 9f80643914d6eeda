"""Helpers of the DVC tests: the dvc command beside this Python, a plain script, shell calls."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DVC = Path(sys.executable).with_name("dvc")
needs_dvc = pytest.mark.skipif(not DVC.exists(), reason="dvc not installed (extra mlbook[dvc])")

SCRIPT = """\
import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.parse_args()
print("acc: 0.5")
"""


def sh(cwd: Path, *args: str) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


def mlbook(cwd: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "mlbook", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == code, f"{args}: {done.stdout}\n{done.stderr}"
    return done
