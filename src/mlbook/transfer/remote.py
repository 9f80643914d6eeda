"""``mlbook pull`` and ``push``: pack on one side, unpack on the other, over ssh.

A remote is ``HOST:PATH`` (like scp and git: a colon before the first slash)
or the path of another clone on this machine. For ``HOST:PATH`` the system
``ssh`` runs ``mlbook -C PATH pack ... -o -`` on the host and its standard
output streams straight into :func:`~mlbook.transfer.unpack.unpack` here (pull),
or a pack made here streams into ``mlbook -C PATH unpack -`` there (push). No
temporary file is left on either side, and nothing is written unless the
whole pack arrived and checked out. For a local path the same commands run as
``python -m mlbook`` in a child process.

The pack is signed by the other project's key, which this one need not
trust: the bytes came over a connection ssh authenticated to the host you
named (or from a path you named), so pull and push accept the signer and
report its fingerprint; a pack changed on the way is still refused.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

import orjson

from mlbook.errors import MlbookError, TransferError
from mlbook.progress import Reporter
from mlbook.project import Project
from mlbook.transfer.pack import OutputsPolicy, pack_runs
from mlbook.transfer.unpack import UnpackResult, unpack

__all__ = ["Remote", "parse_remote", "pull", "push"]

#: seconds a remote whose stream ended early gets to exit with its own error
_EXIT_WAIT = 10.0


@dataclass(frozen=True)
class Remote:
    """Where the other clone is: ``host`` (``None``: this machine) and its path there."""

    host: str | None
    path: str

    def __str__(self) -> str:
        return f"{self.host}:{self.path}" if self.host else self.path


def parse_remote(spec: str) -> Remote:
    """``HOST:PATH`` (a colon before any slash), or a local path.

    Raises:
        TransferError: empty, or a host that starts with ``-`` (it would be an ssh option).
    """
    head, colon, tail = spec.partition(":")
    if not spec.strip():
        raise TransferError("no remote given; use HOST:PATH, or the path of another clone")
    if colon and head and "/" not in head:
        if head.startswith("-"):
            raise TransferError(f"{spec!r}: a host cannot start with '-'")
        return Remote(head, tail or ".")
    return Remote(None, spec)


def _argv(remote: Remote, args: Sequence[str], mlbook: str, ssh: str) -> list[str]:
    """The command that runs ``mlbook -C PATH ARGS`` where the remote is."""
    if remote.host is None:
        return [sys.executable, "-m", "mlbook", "-C", remote.path, *args]
    program = shutil.which(ssh)
    if program is None:
        raise TransferError(
            f"{ssh} not found on PATH: pull and push to HOST:PATH use the system ssh; "
            "install an OpenSSH client, or give the path of a clone on this machine"
        )
    path = remote.path
    shown = "~/" + shlex.quote(path[2:]) if path.startswith("~/") else shlex.quote(path)
    command = " ".join([mlbook, "-C", shown, *map(shlex.quote, args)])
    return [program, "--", remote.host, command]


def _selection(selectors: Sequence[str], experiments: Sequence[str]) -> list[str]:
    args = [arg for ident in experiments for arg in ("-e", ident)]
    return [*args, "--", *selectors] if selectors else args


class _Drain(threading.Thread):
    """Read a child's stream to the end in the background (so the child never blocks)."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.data = b""
        self.problem: BaseException | None = None  # what went wrong on our side, if anything

    def run(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.data = self.stream.read()


def _failure(remote: Remote, command: str, code: int, stderr: bytes, mlbook: str) -> TransferError:
    text = stderr.decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = next((line for line in reversed(lines) if line.startswith("error:")), None)
    detail = said or (lines[-1] if lines else f"exit code {code}")
    hint = ""
    if code == 127 or "not found" in detail:
        hint = f"; is mlbook installed there? name it with --remote-mlbook (now {mlbook!r})"
    return TransferError(f"{remote}: `mlbook {command}` failed: {detail}{hint}")


def pull(
    project: Project,
    remote: str | Remote,
    selectors: Sequence[str] = (),
    *,
    experiments: Sequence[str] = (),
    outputs: OutputsPolicy = "small",
    force: bool = False,
    remote_mlbook: str = "mlbook",
    ssh: str = "ssh",
    reporter: Reporter | None = None,
) -> UnpackResult:
    """Pack runs in the remote clone and unpack them here.

    Args:
        project: the project receiving the runs.
        remote: ``HOST:PATH`` or the path of another clone (see :func:`parse_remote`).
        selectors, experiments: which runs (as for :func:`~mlbook.transfer.pack.pack_runs`).
        outputs: which output files come along (``none``, ``small``, ``all``).
        force: accept runs of another project (another root commit).
        remote_mlbook: the command that runs mlbook on the host.
        ssh: the ssh program.
        reporter: progress (default: none).

    Raises:
        TransferError: ssh missing, the remote command failing (its own error line),
            or the pack refused (see :func:`~mlbook.transfer.unpack.unpack`).
    """
    where = remote if isinstance(remote, Remote) else parse_remote(remote)
    args = ["pack", "-q", "-o", "-", "--outputs", outputs, *_selection(selectors, experiments)]
    argv = _argv(where, args, remote_mlbook, ssh)
    try:
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as exc:
        raise TransferError(f"{where}: cannot start {argv[0]} ({exc.strerror or exc})") from exc
    with child:  # closes the pipes and waits for the child, whatever happens
        assert child.stdout is not None and child.stderr is not None
        errors = _Drain(child.stderr)
        errors.start()
        try:
            result = unpack(
                project, child.stdout, name=str(where), force=force, trust=True, reporter=reporter
            )
        except MlbookError as exc:
            # a remote that failed has closed its output and is exiting: its error says
            # why the stream stopped; one still packing was stopped by us: ours does
            try:
                code = child.wait(timeout=_EXIT_WAIT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                raise exc from None
            errors.join()
            if code != 0:
                raise _failure(where, "pack", code, errors.data, remote_mlbook) from exc
            raise
        child.stdout.close()
        child.wait()
        errors.join()
    return result


def push(
    project: Project,
    remote: str | Remote,
    selectors: Sequence[str] = (),
    *,
    experiments: Sequence[str] = (),
    outputs: OutputsPolicy = "small",
    force: bool = False,
    remote_mlbook: str = "mlbook",
    ssh: str = "ssh",
    reporter: Reporter | None = None,
) -> UnpackResult:
    """Pack runs here and unpack them in the remote clone; returns what the remote did.

    Arguments as for :func:`pull`.

    Raises:
        TransferError: ssh missing, nothing to pack, or the remote unpack failing
            (its own error line).
    """
    where = remote if isinstance(remote, Remote) else parse_remote(remote)
    args = ["unpack", "-q", "--trust", "--format", "json", *(["--force"] if force else []), "-"]
    argv = _argv(where, args, remote_mlbook, ssh)
    try:
        child = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as exc:
        raise TransferError(f"{where}: cannot start {argv[0]} ({exc.strerror or exc})") from exc
    with child:  # closes the pipes and waits for the child, whatever happens
        code, answer, errors = _send(project, child, selectors, experiments, outputs, reporter)
    if code != 0:
        raise _failure(where, "unpack", code, errors.data, remote_mlbook) from errors.problem
    if errors.problem is not None:
        raise TransferError(
            f"{where}: the pack could not be sent ({errors.problem})"
        ) from errors.problem
    try:
        return UnpackResult.from_dict(orjson.loads(answer))
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise TransferError(
            f"{where}: `mlbook unpack` answered something else than its JSON result; "
            "is the same mlbook installed there?"
        ) from exc


def _send(
    project: Project,
    child: subprocess.Popen[bytes],
    selectors: Sequence[str],
    experiments: Sequence[str],
    outputs: OutputsPolicy,
    reporter: Reporter | None,
) -> tuple[int, bytes, _Drain]:
    """Pack into the child's stdin; return its exit code, its stdout and its stderr drain."""
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    answer, errors = _Drain(child.stdout), _Drain(child.stderr)
    answer.start()
    errors.start()
    try:
        pack_runs(
            project,
            selectors,
            experiments=experiments,
            output=child.stdin,
            outputs=outputs,
            reporter=reporter,
        )
    except OSError as exc:  # the other side went away: its error says why
        errors.problem = exc
    except BaseException:
        with contextlib.suppress(OSError):
            child.stdin.close()
        child.kill()
        raise
    with contextlib.suppress(OSError):
        child.stdin.close()
    code = child.wait()
    answer.join()
    errors.join()
    return code, answer.data, errors
