"""Snapshots of the project's code as git commits, made with the git CLI.

:func:`snapshot` records the current state of the project's files (tracked and
untracked, ``.gitignore`` honoured, files over a size limit left out) as a commit.

- ``mode="refs"`` (the default): the commit is built with plumbing and a temporary
  index (``GIT_INDEX_FILE``) and stored under ``refs/mlbook/runs/<run-id>/<stage>``.
  The user's branch, index, stash and working tree are untouched; the parent is
  ``HEAD`` when there is one (a detached HEAD works the same way).
- ``mode="branch"``: a real commit on the current branch (``git add -A`` then
  ``git commit``), like the manual practice. Refused during a merge, rebase,
  cherry-pick or revert, and on a detached HEAD (:class:`ProvenanceError`). When
  nothing changed, no commit is made and ``HEAD`` is recorded.

Defined behaviour when git cannot help — the run must still run:

- git missing from ``PATH`` or the project not in a repository: a :class:`Snapshot`
  with ``commit=None`` and ``reason`` saying why.
- An empty repository (no commit yet): the snapshot is a root commit.
- A dirty index: refs mode starts from a copy of it, so staged changes are
  snapshotted too and the user's index stays as it was.
- Submodules: recorded as their checked-out commit (a gitlink), not their content.

Concurrency and slow git, so that a snapshot always ends and a lost commit says why:

- mlbook's own temporary files are never in a snapshot: they are written under
  ``.mlbook/tmp/`` (:mod:`mlbook._fs`), and ``.mlbook/`` and any
  ``*.mlbook.tmp`` file are excluded explicitly as well.
- A file that vanishes while git reads the tree (a user's temporary file) makes
  the tree build start again, up to :data:`_TREE_ATTEMPTS` times.
- Refs mode runs no hooks (``-c core.hooksPath=/dev/null``): its commits are
  mlbook's, not the user's. Branch mode runs the user's hooks (but pre-commit and
  commit-msg, skipped by ``--no-verify``), each git command stopped after
  ``git_timeout`` seconds (:data:`GIT_TIMEOUT`); a commit made before a slow
  ``post-commit`` hook was stopped is kept, with a note in ``reason``.
- Branch mode serialises mlbook's own commits (``flock`` on
  ``<git-dir>/mlbook-commit.lock``) and waits for git's ``index.lock`` at most
  ``lock_timeout`` seconds (:data:`LOCK_TIMEOUT`), then gives up naming the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mlbook._fs import TEMP_SUFFIX
from mlbook.errors import ProvenanceError

__all__ = [
    "GIT_TIMEOUT",
    "LOCK_TIMEOUT",
    "REF_PREFIX",
    "GitInfo",
    "Snapshot",
    "checkout",
    "current_commit",
    "diff_commits",
    "git_info",
    "has_identity",
    "refuse_in_progress",
    "resolve",
    "run_ref",
    "snapshot",
]

REF_PREFIX = "refs/mlbook/runs"
#: seconds one git command may take (hooks included) before it is stopped
GIT_TIMEOUT = 60.0
#: seconds branch mode waits for git's ``index.lock`` (and for another mlbook commit)
LOCK_TIMEOUT = 30.0
# a file vanishing while `git add` reads the tree: build it again, this many times at most
_TREE_ATTEMPTS = 4
# mlbook's own state and temporary files, never part of a snapshot
_STATE_DIR = ".mlbook"
_NO_HOOKS = ("-c", "core.hooksPath=/dev/null")
# hidden-ref snapshots are not the user's commits: without a configured identity
# they are made by "mlbook" rather than lost (branch mode refuses instead)
_FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "mlbook",
    "GIT_AUTHOR_EMAIL": "mlbook@localhost",
    "GIT_COMMITTER_NAME": "mlbook",
    "GIT_COMMITTER_EMAIL": "mlbook@localhost",
}
Mode = Literal["refs", "branch"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_IN_PROGRESS = {
    "MERGE_HEAD": "a merge",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
}


@dataclass(frozen=True)
class Snapshot:
    """The result of :func:`snapshot`.

    Attributes:
        commit: the full hash of the recorded commit, or ``None`` when none could be made.
        ref: the ref that points to it (``refs/mlbook/runs/<id>/<stage>``, or the branch ref).
        reason: why there is no commit (empty when there is one), or a note
            (``"nothing changed; HEAD recorded"``).
        skipped: project-relative paths left out because they exceed the size limit.
        mode: ``"refs"`` or ``"branch"``.
    """

    commit: str | None
    ref: str | None = None
    reason: str = ""
    skipped: tuple[str, ...] = ()
    mode: str = "refs"

    @property
    def short(self) -> str | None:
        """The first 7 characters of the commit, or ``None``."""
        return self.commit[:7] if self.commit else None


@dataclass(frozen=True)
class GitInfo:
    """Where the project sits in git (see :func:`git_info`)."""

    git: str
    toplevel: Path
    git_dir: Path
    prefix: str  # the project's path inside the repository, "" or ending with "/"
    head: str | None  # None in an empty repository
    branch: str | None  # None on a detached HEAD
    env: dict[str, str] = field(default_factory=dict, repr=False)


class _GitTimeout(ProvenanceError):
    """A git command (or a hook it ran) did not finish in time and was stopped."""


class _GitFailed(ProvenanceError):
    """A git command exited non-zero; ``stderr`` is all it said."""

    def __init__(self, message: str, stderr: str) -> None:
        super().__init__(message)
        self.stderr = stderr


def _run(
    git: str,
    args: Sequence[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    check: bool = True,
    timeout: float = GIT_TIMEOUT,
) -> subprocess.CompletedProcess[bytes]:
    """Run git in its own process group; stop the whole group (hooks too) after ``timeout``."""
    argv = [git, *args]
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise ProvenanceError(f"cannot run git in {cwd}: {exc.strerror or exc}") from exc
    command = next((a for a in args if not a.startswith("-") and "=" not in a), "")
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise _GitTimeout(
            f"git {command} did not finish within {timeout:g} s in {cwd} and was stopped "
            "(a slow hook or a very large tree?)"
        ) from None
    except BaseException:
        _stop(proc)
        raise
    done = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if check and done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace").strip()
        lines = stderr.splitlines()
        said = [line for line in lines if line.startswith(("fatal:", "error:"))]
        detail = (said or lines or [f"exit code {done.returncode}"])[0]
        raise _GitFailed(f"git {command} failed in {cwd}: {detail}", stderr)
    return done


def _stop(proc: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    """Stop git's process group (hooks included) and reap git without waiting on its pipes.

    SIGTERM first, so git removes its lock files (``index.lock``) as it exits;
    SIGKILL for whatever is left after ``grace`` seconds.
    """
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)  # a hook that ignored SIGTERM, or git itself
    proc.wait()


def _out(done: subprocess.CompletedProcess[bytes]) -> str:
    return done.stdout.decode("utf-8", "replace").strip()


def git_info(root: Path | str) -> GitInfo | str:
    """Locate git and the repository holding ``root``.

    Returns:
        a :class:`GitInfo`, or a one-line reason when there is no usable git
        (git not on ``PATH``, not a repository).
    """
    root = Path(root).resolve()
    git = shutil.which("git")
    if git is None:
        return "git not found on PATH: install git to record each run's code"
    env = {**os.environ, "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}
    env.pop("GIT_INDEX_FILE", None)
    done = _run(
        git,
        ["rev-parse", "--show-toplevel", "--absolute-git-dir", "--show-prefix"],
        root,
        env,
        check=False,
    )
    if done.returncode != 0:
        return f"{root} is not in a git repository: run `git init` to record each run's code"
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    toplevel, git_dir = Path(lines[0]), Path(lines[1])
    prefix = lines[2] if len(lines) > 2 else ""
    head = _run(git, ["rev-parse", "-q", "--verify", "HEAD^{commit}"], root, env, check=False)
    branch = _run(git, ["symbolic-ref", "-q", "HEAD"], root, env, check=False)
    return GitInfo(
        git=git,
        toplevel=toplevel,
        git_dir=git_dir,
        prefix=prefix,
        head=_out(head) if head.returncode == 0 else None,
        branch=_out(branch) if branch.returncode == 0 else None,
        env=env,
    )


def run_ref(run_id: str, stage: str) -> str:
    """The hidden ref of a run's snapshot: ``refs/mlbook/runs/<run_id>/<stage>``."""
    for name, value in (("run id", run_id), ("stage", stage)):
        if not _NAME.match(value) or ".." in value or value.endswith((".lock", ".")):
            raise ProvenanceError(
                f"{name} {value!r} cannot be part of a git ref; use letters, digits, '.', '_', '-'"
            )
    return f"{REF_PREFIX}/{run_id}/{stage}"


def snapshot(
    root: Path | str,
    run_id: str,
    stage: str,
    message: str,
    max_file_mb: float = 5.0,
    mode: Mode = "refs",
    include: Sequence[Path | str] = (),
    data_dir: str | None = None,
    *,
    git_timeout: float = GIT_TIMEOUT,
    lock_timeout: float = LOCK_TIMEOUT,
) -> Snapshot:
    """Record the project's files as a commit.

    Args:
        root: the project root (it may be a sub-directory of the repository; only
            its files are updated, the rest of the tree is taken from ``HEAD``).
        run_id: the run, e.g. ``20261124-1616-ab12``.
        stage: ``before`` or ``after`` (any ref-safe word).
        message: the commit message, e.g. ``[E012.1] before run small``.
        max_file_mb: new or changed files larger than this are left out.
        mode: ``"refs"`` (hidden ref, nothing of the user's touched) or ``"branch"``.
        include: directories or files inside ``root`` recorded even when
            ``.gitignore`` ignores them (a run's output directory, for the
            ``after`` snapshot); the size limit applies. Refs mode only: branch
            mode never starts tracking ignored files.
        data_dir: the datasets area relative to ``root``: its files that git does
            not track yet are left out (the data is recorded by its hash instead),
            except each dataset's ``dataset.json``. ``None``: nothing left out.
        git_timeout: seconds each git command may take, hooks included.
        lock_timeout: seconds branch mode waits for ``index.lock`` and for another
            mlbook process committing on the branch.

    Returns:
        the :class:`Snapshot`; ``commit`` is ``None`` (with ``reason``) without git.

    Raises:
        ProvenanceError: branch mode during a merge/rebase or on a detached HEAD,
            or with ``index.lock`` held longer than ``lock_timeout`` (the message
            names the lock); a bad run id or stage; git failing or timing out.
    """
    ref = run_ref(run_id, stage)
    info = git_info(root)
    if isinstance(info, str):
        return Snapshot(commit=None, reason=info, mode=mode)
    cwd = Path(root).resolve()
    if mode == "branch":
        return _branch_commit(info, cwd, message, max_file_mb, data_dir, git_timeout, lock_timeout)
    # mlbook's own commits: no user hooks (update-ref would run reference-transaction)
    git = _Git(info, cwd, git_timeout, _NO_HOOKS)
    tree, skipped = _build_tree(git, max_file_mb, include, data_dir)
    parents = ["-p", info.head] if info.head else []
    env = info.env if has_identity(info) else {**info.env, **_FALLBACK_IDENTITY}
    commit = _out(git.run(["commit-tree", tree, *parents], env=env, stdin=message.encode()))
    git.run(["update-ref", "-m", f"mlbook: {message}", ref, commit])
    return Snapshot(commit=commit, ref=ref, skipped=skipped, mode="refs")


@dataclass(frozen=True)
class _Git:
    """git commands for one snapshot: the repository, the directory, a timeout, options."""

    info: GitInfo
    cwd: Path
    timeout: float = GIT_TIMEOUT
    options: tuple[str, ...] = ()

    def run(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        return _run(
            self.info.git,
            [*self.options, *args],
            self.cwd,
            self.info.env if env is None else env,
            stdin,
            check,
            self.timeout,
        )


def _build_tree(
    git: _Git,
    max_file_mb: float,
    include: Sequence[Path | str] = (),
    data_dir: str | None = None,
) -> tuple[str, tuple[str, ...]]:
    """Write the tree of the working files (temporary index) and return its hash.

    A file that vanishes while git reads it (someone's temporary file) fails
    ``git add``; the build then starts again from a fresh copy of the index,
    leaving that file out (it is gone).
    """
    gone: list[str] = []
    attempt = 0
    while True:
        try:
            return _build_tree_once(git, max_file_mb, include, data_dir, gone)
        except _GitFailed as exc:
            path = _vanished_path(exc.stderr, git.cwd)
            if path is not None and path not in gone and len(gone) < _MAX_GONE:
                gone.append(path)
                continue
            attempt += 1
            if attempt >= _TREE_ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)


def _vanished_path(stderr: str, cwd: Path) -> str | None:
    """The file git could not stat because it is gone (``None`` for any other error)."""
    match = _VANISHED_PATH.search(stderr)
    if match is None or (cwd / match[1]).exists():
        return None
    return match[1]


def _build_tree_once(
    git: _Git,
    max_file_mb: float,
    include: Sequence[Path | str],
    data_dir: str | None,
    gone: Sequence[str] = (),
) -> tuple[str, tuple[str, ...]]:
    info, cwd = git.info, git.cwd
    large = _large_files(git, max_file_mb, data_dir)
    forced, too_big = _included_files(cwd, include, max_file_mb)
    with tempfile.TemporaryDirectory(prefix="mlbook-index-") as tmp:
        index = Path(tmp) / "index"
        user_index = info.git_dir / "index"
        env = {**info.env, "GIT_INDEX_FILE": str(index)}
        try:
            # copy2 keeps the index mtime too, so git still re-reads "racily clean" entries
            shutil.copy2(user_index, index)  # keeps git's stat cache: add -A stays fast
        except FileNotFoundError:
            if info.head:
                git.run(["read-tree", info.head], env=env)
        _add_all(git, env, _pathspec((*large, *gone), data_dir))
        _add_dataset_descriptions(git, env, data_dir)
        if forced:
            spec = "\0".join(f":(literal){name}" for name in forced)
            args = ["add", "-f", "--pathspec-from-file=-", "--pathspec-file-nul"]
            git.run(args, env=env, stdin=spec.encode("utf-8", "surrogateescape"))
        tree = _out(git.run(["write-tree"], env=env))
    return tree, tuple(sorted({*large, *too_big}))


def _included_files(
    cwd: Path, include: Sequence[Path | str], max_file_mb: float
) -> tuple[list[str], list[str]]:
    """Files under the ``include`` paths, relative to ``cwd``: (within the limit, over it)."""
    limit = max_file_mb * 1024 * 1024
    small: list[str] = []
    big: list[str] = []
    for entry in include:
        start = (cwd / entry).resolve()
        if not start.is_relative_to(cwd) or not start.exists():
            continue
        paths = [start] if start.is_file() else sorted(start.rglob("*"))
        for path in paths:
            if path.name.endswith(TEMP_SUFFIX):
                continue
            try:
                if path.is_symlink() or not path.is_file():
                    continue
                size = path.stat().st_size
            except OSError:
                continue  # vanished meanwhile
            name = path.relative_to(cwd).as_posix()
            (big if size > limit else small).append(name)
    return small, big


def _add_all(git: _Git, env: dict[str, str], pathspec: bytes) -> None:
    args = ["add", "-A", "--pathspec-from-file=-", "--pathspec-file-nul"]
    git.run(args, env=env, stdin=pathspec)


def _add_dataset_descriptions(git: _Git, env: dict[str, str], data_dir: str | None) -> None:
    """Add each dataset's ``dataset.json``, ``*.dvc`` and ``dvc.lock`` (small; they say
    what the data is, and `mlbook data restore` brings it back from them)."""
    if data_dir is None or not (git.cwd / data_dir).is_dir():
        return
    args = ["add", "-A", "--pathspec-from-file=-", "--pathspec-file-nul"]
    for name in ("dataset.json", "*.dvc", "dvc.lock"):  # one each: a spec matching nothing fails
        spec = f":(glob){_glob_escape(data_dir)}/**/{name}"
        git.run(args, env=env, stdin=spec.encode("utf-8", "surrogateescape"), check=False)


def _glob_escape(path: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]\\" else c for c in path)


def _large_files(git: _Git, max_file_mb: float, data_dir: str | None = None) -> tuple[str, ...]:
    """New or modified files under the directory over the limit, relative to it."""
    if max_file_mb == float("inf"):
        return ()
    limit = max_file_mb * 1024 * 1024
    args = ["ls-files", "-z", "-m", "-o", "--exclude-standard", "--", ".", *_EXCLUDED]
    if data_dir is not None:
        args.append(_exclude_dir(data_dir))
    done = git.run(args)
    big: set[str] = set()
    for name in done.stdout.decode("utf-8", "surrogateescape").split("\0"):
        if not name:
            continue
        try:
            size = (git.cwd / name).lstat().st_size
        except OSError:
            continue  # deleted: git add -A records the deletion
        if size > limit:
            big.add(name)
    return tuple(sorted(big))


def _exclude_dir(path: str) -> str:
    """A pathspec leaving out directory ``path`` (relative), ignored by .gitignore or not.

    `git add` fails ("paths are ignored by one of your .gitignore files") when the
    part of a pathspec before its first wildcard names an ignored path, exclusions
    included; a first character written as a class (``[D]atasets/**``) has none.
    """
    escaped = _glob_escape(path.strip("/"))
    head = f"[{escaped[0]}]" if escaped[0] != "[" else escaped[:3]
    rest = escaped[1:] if escaped[0] != "[" else escaped[3:]
    return f":(exclude,glob){head}{rest}/**"


# what no snapshot holds, whatever .gitignore says: mlbook's state and temporary files
_EXCLUDED = (_exclude_dir(_STATE_DIR), f":(exclude,glob)**/*{TEMP_SUFFIX}")


def _pathspec(skipped: tuple[str, ...], data_dir: str | None = None) -> bytes:
    specs = [".", *_EXCLUDED, *(f":(exclude,literal){name}" for name in skipped)]
    if data_dir is not None:
        specs.append(_exclude_dir(data_dir))
    return "\0".join(specs).encode("utf-8", "surrogateescape")


def has_identity(info: GitInfo) -> bool:
    """True when git knows who commits (``user.name``/``user.email`` or the env vars)."""
    done = _run(info.git, ["var", "GIT_COMMITTER_IDENT"], info.toplevel, info.env, check=False)
    return done.returncode == 0


def refuse_in_progress(info: GitInfo) -> None:
    """Raise when branch commits are impossible: a merge/rebase in progress, or detached."""
    for marker, what in _IN_PROGRESS.items():
        if (info.git_dir / marker).exists():
            raise ProvenanceError(
                f"cannot commit on the branch: {info.toplevel} is in the middle of {what}; "
                'finish or abort it first, or set [git] commits = "refs" in mlbook.toml'
            )
    if info.branch is None and info.head is not None:
        raise ProvenanceError(
            f"cannot commit on the branch: HEAD is detached in {info.toplevel}; "
            'switch to a branch, or set [git] commits = "refs" in mlbook.toml'
        )


@contextlib.contextmanager
def _commit_lock(info: GitInfo, deadline: float) -> Iterator[None]:
    """Serialise mlbook's branch commits in this repository (other mlbook processes)."""
    lock = info.git_dir / "mlbook-commit.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ProvenanceError(
                        f"cannot commit on the branch: another mlbook process held {lock} "
                        'too long; try again, or set [git] commits = "refs" in mlbook.toml'
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _index_locked(info: GitInfo, lock_timeout: float) -> ProvenanceError:
    lock = info.git_dir / "index.lock"
    return ProvenanceError(
        f"cannot commit on the branch: {lock} still exists after {lock_timeout:g} s "
        "(another git command is running, or one crashed); "
        "remove the lock once no git command runs"
    )


def _wait_for_index(info: GitInfo, deadline: float, lock_timeout: float) -> None:
    lock = info.git_dir / "index.lock"
    while lock.exists():
        if time.monotonic() >= deadline:
            raise _index_locked(info, lock_timeout)
        time.sleep(0.05)


def _branch_commit(
    info: GitInfo,
    cwd: Path,
    message: str,
    max_file_mb: float,
    data_dir: str | None,
    git_timeout: float,
    lock_timeout: float,
) -> Snapshot:
    refuse_in_progress(info)
    deadline = time.monotonic() + lock_timeout
    git = _Git(info, cwd, git_timeout)
    vanished = 0
    gone: list[str] = []
    with _commit_lock(info, deadline):
        head = _head(git)  # another mlbook process may have committed since git_info
        while True:
            _wait_for_index(info, deadline, lock_timeout)
            try:
                return _branch_commit_once(git, head, message, max_file_mb, data_dir, gone)
            except _GitFailed as exc:
                path = _vanished_path(exc.stderr, cwd)
                if path is not None and path not in gone and len(gone) < _MAX_GONE:
                    gone.append(path)  # leave the vanished file out and go again
                    continue
                locked = bool(_INDEX_LOCKED.search(exc.stderr))
                if not locked and not _VANISHED.search(exc.stderr):
                    raise
                vanished += not locked
                if locked and time.monotonic() >= deadline:
                    raise _index_locked(info, lock_timeout) from exc
                if vanished >= _TREE_ATTEMPTS or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)


# git's own lock taken by another git command; a file gone while git read the tree
_INDEX_LOCKED = re.compile(r"index\.lock'?: File exists|Unable to create '[^']*index\.lock'")
_VANISHED = re.compile(r"unable to stat|No such file or directory|unable to index|short read")
_VANISHED_PATH = re.compile(r"unable to stat '([^']+)': No such file or directory")
# vanished files left out of one snapshot at most (then it fails with git's message)
_MAX_GONE = 200


def _head(git: _Git) -> str | None:
    done = git.run(["rev-parse", "-q", "--verify", "HEAD^{commit}"], check=False)
    return _out(done) if done.returncode == 0 else None


def _branch_commit_once(
    git: _Git,
    head: str | None,
    message: str,
    max_file_mb: float,
    data_dir: str | None,
    gone: Sequence[str] = (),
) -> Snapshot:
    info = git.info
    skipped = _large_files(git, max_file_mb, data_dir)
    _add_all(git, info.env, _pathspec((*skipped, *gone), data_dir))
    _add_dataset_descriptions(git, info.env, data_dir)
    staged = git.run(["diff", "--cached", "--quiet"], check=False)
    if head is not None and staged.returncode == 0:
        return Snapshot(
            commit=head,
            ref=info.branch,
            reason="nothing changed; HEAD recorded",
            skipped=skipped,
            mode="branch",
        )
    try:
        git.run(["commit", "-q", "--no-verify", "-m", message])
    except _GitTimeout as exc:
        # post-commit runs after the commit is made: keep the commit, say the hook was stopped
        made = _head(git)
        if made is None or made == head or _subject(git, made) != message.split("\n")[0]:
            raise
        return Snapshot(
            commit=made, ref=info.branch, reason=f"{exc}", skipped=skipped, mode="branch"
        )
    made = _head(git)
    return Snapshot(commit=made, ref=info.branch, skipped=skipped, mode="branch")


def _subject(git: _Git, commit: str) -> str:
    return _out(git.run(["log", "-1", "--format=%s", commit], check=False))


def _require(root: Path | str) -> tuple[GitInfo, Path]:
    info = git_info(root)
    if isinstance(info, str):
        raise ProvenanceError(info)
    return info, Path(root).resolve()


def resolve(root: Path | str, target: str, stage: str = "before") -> str:
    """Resolve a commit, a ref, or a run id (via its hidden ref) to a full commit hash.

    A run id resolves through ``refs/mlbook/runs/<run_id>/<stage>``.

    Raises:
        ProvenanceError: nothing of that name; no git.
    """
    info, cwd = _require(root)
    candidates = [target]
    if _NAME.match(target):
        candidates.insert(0, f"{REF_PREFIX}/{target}/{stage}")
    for candidate in candidates:
        done = _run(
            info.git,
            ["rev-parse", "-q", "--verify", f"{candidate}^{{commit}}"],
            cwd,
            info.env,
            check=False,
        )
        if done.returncode == 0:
            return _out(done)
    raise ProvenanceError(
        f"no commit, ref or run called {target!r} in {info.toplevel}; "
        f"list run snapshots with `git for-each-ref {REF_PREFIX}`"
    )


def current_commit(root: Path | str) -> str | None:
    """The full hash of ``HEAD``, or ``None`` (no git, no repository, no commit yet)."""
    info = git_info(root)
    return None if isinstance(info, str) else info.head


def checkout(root: Path | str, commit: str, dest: Path | str, stage: str = "before") -> Path:
    """Write the project's files as of ``commit`` into ``dest`` (a plain export).

    ``commit`` may be a commit, a ref, or a run id (its ``stage`` snapshot, see
    :func:`resolve`). ``dest`` must not exist or be an empty directory. Only the
    project's part of the repository is written, so ``dest`` looks like the project root.

    Raises:
        ProvenanceError: unknown commit, ``dest`` not empty, no git.
    """
    info, cwd = _require(root)
    full = resolve(cwd, commit, stage)
    target = Path(dest).resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ProvenanceError(f"{target} exists and is not an empty directory; choose a new one")
    treeish = f"{full}:{info.prefix}" if info.prefix else full
    archive = _run(info.git, ["archive", "--format=tar", treeish], info.toplevel, info.env)
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target


def diff_commits(
    root: Path | str, a: str, b: str | None = None, paths: Sequence[str] | None = None
) -> str:
    """A unified diff from commit ``a`` to ``b`` (``None``: the working tree now).

    The working tree means every file a snapshot would record: tracked and
    untracked, ``.gitignore`` honoured.

    Args:
        root: the project root; paths in the diff are relative to it.
        a, b: commits, refs or run ids (see :func:`resolve`).
        paths: limit the diff to these project-relative paths (``None``: everything;
            an empty list gives an empty diff).

    Raises:
        ProvenanceError: unknown commit; no git.
    """
    if paths is not None and not paths:
        return ""
    info, cwd = _require(root)
    # the working tree is snapshotted into a tree object, so untracked files count too
    right = resolve(cwd, b) if b is not None else _build_tree(_Git(info, cwd), float("inf"))[0]
    revs = [resolve(cwd, a), right]
    spec = [f":(literal){p}" for p in paths] if paths is not None else ["."]
    done = _run(
        info.git,
        ["diff", "--no-color", "--no-ext-diff", "--relative", *revs, "--", *spec],
        cwd,
        info.env,
    )
    return done.stdout.decode("utf-8", "replace")
