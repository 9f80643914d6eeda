"""Helpers the runner tests share: write a script, start the CLI, wait for a condition."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from mlbook.project import Project


def script(project: Project, name: str, body: str) -> Path:
    """Write ``Models/<name>`` from an indented block of code."""
    path = project.models_dir / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def mlbook_cli(project: Project, *args: str) -> subprocess.Popen[bytes]:
    """``python -m mlbook ARGS`` in the project, output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "mlbook", *args],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def gone(pid: int) -> bool:
    """True when process ``pid`` has exited (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True
