"""The fault-injection scripts in benchmarks/, run in a short form."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_kills_of_the_runner_lose_no_flushed_point() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "fault_kill_runner.py"), "--kills", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kills:" in done.stdout and " 0 lost, 0 duplicates, 0 failed" in done.stdout
