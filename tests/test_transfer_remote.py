"""pull and push: two clones on one machine (a local path stands in for HOST:PATH), the
system ssh replaced by a stand-in script, and the one line when ssh is missing."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from transfer_helpers import Clones, add_experiment, make_clones, run, snapshot_of, state_of

from mlbook.errors import TransferError
from mlbook.project import Project
from mlbook.transfer.remote import Remote, parse_remote, pull, push

MLBOOK = f"{shlex.quote(sys.executable)} -m mlbook"


@pytest.fixture
def clones(tmp_path: Path) -> Clones:
    return make_clones(tmp_path)


@pytest.mark.parametrize(
    ("spec", "remote"),
    [
        ("cluster:work/digits", Remote("cluster", "work/digits")),
        ("me@gpu-01:~/digits", Remote("me@gpu-01", "~/digits")),
        ("cluster:", Remote("cluster", ".")),
        ("../b", Remote(None, "../b")),
        ("./odd:name", Remote(None, "./odd:name")),
        ("/abs/path", Remote(None, "/abs/path")),
    ],
)
def test_parse_remote(spec: str, remote: Remote) -> None:
    assert parse_remote(spec) == remote
    assert str(remote) in (spec, spec + ".")


def test_parse_remote_refuses_an_option_as_host() -> None:
    with pytest.raises(TransferError, match="a host cannot start with '-'"):
        parse_remote("-oProxyCommand=x:path")


def test_pull_and_push_with_a_local_path(clones: Clones) -> None:
    a, b = clones.a, clones.b
    ran_a = run(a, "E001")
    add_experiment(b, "E002", "second")
    ran_b = run(b, "E002")
    pulled = pull(b, str(a.root))
    assert sorted(pulled.added) == sorted(ran_a) and pulled.refs == 4
    assert pulled.signer is not None and pulled.project == "a"
    assert pull(b, str(a.root)).added == []
    pushed = push(b, str(a.root))
    assert sorted(pushed.added) == sorted(ran_b)
    assert sorted(pushed.present) == sorted(ran_a)
    assert snapshot_of(a) == snapshot_of(b)


def test_pull_only_the_runs_named(clones: Clones) -> None:
    small, _ = run(clones.a, "E001")
    pulled = pull(clones.b, str(clones.a.root), [small], outputs="none")
    assert pulled.added == [small] and pulled.outputs == 0


def test_ssh_missing_is_one_line(clones: Clones) -> None:
    with pytest.raises(TransferError) as caught:
        pull(clones.b, "cluster:work/a", ssh="mlbook-test-no-such-ssh")
    assert str(caught.value) == (
        "mlbook-test-no-such-ssh not found on PATH: pull and push to HOST:PATH use the "
        "system ssh; install an OpenSSH client, or give the path of a clone on this machine"
    )


def test_ssh_missing_from_the_command_line(clones: Clones) -> None:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent / "no-such-dir")}
    done = subprocess.run(
        [sys.executable, "-m", "mlbook", "pull", "cluster:work/a"],
        cwd=clones.b.root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "error: ssh not found on PATH: pull and push to HOST:PATH use the system ssh; "
        "install an OpenSSH client, or give the path of a clone on this machine\n"
    )


@pytest.fixture
def fake_ssh(tmp_path: Path) -> Path:
    """A stand-in for ssh: ``fake-ssh -- HOST COMMAND`` runs COMMAND in a local shell."""
    script = tmp_path / "bin" / "fake-ssh"
    script.parent.mkdir()
    script.write_text(
        '#!/bin/sh\n[ "$1" = "--" ] || exit 255\n'
        'echo "$2" >> "$(dirname "$0")/hosts"\nexec sh -c "$3"\n'
    )
    script.chmod(0o755)
    return script


def test_pull_and_push_over_ssh(tmp_path: Path, fake_ssh: Path) -> None:
    clones = make_clones(tmp_path / "odd dir")  # a space: the remote command is quoted
    a, b = clones.a, clones.b
    ran_a = run(a, "E001")
    add_experiment(b, "E002", "second")
    ran_b = run(b, "E002")
    remote = f"gpu-01:{a.root}"
    pulled = pull(b, remote, experiments=["E001"], remote_mlbook=MLBOOK, ssh=str(fake_ssh))
    assert sorted(pulled.added) == sorted(ran_a) and pulled.source == remote
    pushed = push(b, remote, experiments=["E002"], remote_mlbook=MLBOOK, ssh=str(fake_ssh))
    assert sorted(pushed.added) == sorted(ran_b)
    assert (fake_ssh.parent / "hosts").read_text() == "gpu-01\ngpu-01\n"
    assert snapshot_of(a) == snapshot_of(b)


def test_the_remote_error_is_reported(clones: Clones, tmp_path: Path, fake_ssh: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(TransferError) as caught:
        pull(clones.b, f"gpu-01:{tmp_path / 'empty'}", remote_mlbook=MLBOOK, ssh=str(fake_ssh))
    assert str(caught.value).startswith(
        f"gpu-01:{tmp_path / 'empty'}: `mlbook pack` failed: error: not an mlbook project"
    )
    with pytest.raises(TransferError, match="is mlbook installed there"):
        pull(clones.b, f"gpu-01:{clones.a.root}", remote_mlbook="no-mlbook", ssh=str(fake_ssh))
    with pytest.raises(TransferError, match="`mlbook pack` failed: error: no finished runs"):
        pull(clones.b, str(clones.a.root))


def test_push_refused_there_writes_nothing(clones: Clones, tmp_path: Path) -> None:
    run(clones.a, "E001")
    other = Project.open(clones.b.root)
    before = state_of(other)
    from mlbook.scaffold import init_project

    foreign = init_project(tmp_path / "foreign").project
    add_experiment(foreign, "E001", "elsewhere")
    with pytest.raises(TransferError, match=r"`mlbook unpack` failed: error: .* another project"):
        push(clones.a, str(foreign.root))
    assert state_of(other) == before
    assert len(push(clones.a, str(foreign.root), force=True).added) == 2
