"""`mlbook ui`: says where it listens, loopback by default, one clear line when it cannot."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlbook.cli import cli
from mlbook.project import Project

pytest.importorskip("starlette")


def test_help() -> None:
    result = CliRunner().invoke(cli, ["ui", "--help"])
    assert result.exit_code == 0
    assert "binds 127.0.0.1 unless --host says otherwise" in " ".join(result.output.split())


def test_a_busy_port_is_one_line(project: Project) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["-C", str(project.root), "ui", "--port", str(port)])
    assert result.exit_code == 1
    assert re.fullmatch(
        rf"error: cannot listen on 127\.0\.0\.1:{port}: .+; pick another with --port "
        r"\(0: any free port\)\n",
        result.stderr,
    )


def test_another_host_is_warned_about(project: Project) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the bind fails after the warning
    result = CliRunner().invoke(cli, ["-C", str(project.root), "ui", "--host", "192.0.2.1"])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "warning: listening on 192.0.2.1: anyone who can reach this machine can read the runs"
        " and edit the journal"
    )
    assert lines[1].startswith("error: cannot listen on 192.0.2.1:8765: ")


def test_outside_a_project(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["-C", str(tmp_path), "ui"])
    assert result.exit_code == 1 and "error: not an mlbook project" in result.stderr


def test_serves_on_loopback_and_stops_on_ctrl_c(project: Project) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "mlbook", "-C", str(project.root), "ui", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.fullmatch(
            rf"mlbook ui for {re.escape(str(project.root))} on (http://127\.0\.0\.1:\d+/)"
            r" \(this machine only; Ctrl-C stops it\)\n",
            line,
        )
        assert found, line
        with urllib.request.urlopen(found[1], timeout=10) as response:
            page = response.read().decode()
        assert "no runs recorded yet" in page
    finally:
        process.send_signal(signal.SIGINT)
        out, errors = process.communicate(timeout=20)
    assert process.returncode == 0, errors
    assert out == "mlbook ui stopped\n" and errors == ""
