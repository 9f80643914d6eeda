"""Snapshots of the project's code as git commits, made with the git CLI.

:func:`snapshot` records the current state of the project's files (tracked and
untracked, ``.gitignore`` honoured) as a commit. A new or changed file over the
size limit (``[git] max_file_size``, default 1 MB) is recorded as a small
pointer file (path, sha256, size; :mod:`mlbook.provenance.pointers`) whose
bytes stay in the working tree, out of git's objects; :func:`checkout` puts
them back while the project still has them.

- ``mode="refs"`` (the default): the commit is built with plumbing and a temporary
  index (``GIT_INDEX_FILE``) and stored under ``refs/mlbook/runs/<run-id>/<stage>``.
  The user's branch, index, stash and working tree are untouched; the parent is
  ``HEAD`` when there is one (a detached HEAD works the same way).
- ``mode="branch"``: a real commit on the current branch (``git add -A`` then
  ``git commit``), like the manual practice. Refused during a merge, rebase,
  cherry-pick or revert, and on a detached HEAD (:class:`ProvenanceError`). When
  nothing changed, no commit is made and ``HEAD`` is recorded. Files over the
  size limit are left out (listed in ``skipped``): a pointer in the user's index
  would show the file as changed.
- Dataset metadata (``dataset.json``, ``records.jsonl``, ``records.json`` up to
  two levels under the datasets area) goes in whatever ``.gitignore`` says
  (refs mode), by the same size rule, so a run's split can be restored.

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
import functools
import io
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mlbook._fs import TEMP_SUFFIX
from mlbook.errors import ProvenanceError

__all__ = [
    "BUNDLE_TIMEOUT",
    "DEFAULT_MAX_FILE_SIZE",
    "GIT_TIMEOUT",
    "LOCK_TIMEOUT",
    "REF_PREFIX",
    "Checkout",
    "GitInfo",
    "Snapshot",
    "bundle_heads",
    "bundle_refs",
    "checkout",
    "create_refs",
    "current_commit",
    "diff_commits",
    "git_info",
    "has_identity",
    "refuse_in_progress",
    "resolve",
    "root_commits",
    "run_ref",
    "run_refs",
    "snapshot",
    "unbundle",
]

REF_PREFIX = "refs/mlbook/runs"
#: bytes above which a file is kept in a snapshot as a pointer (``[git] max_file_size``)
DEFAULT_MAX_FILE_SIZE = 1_000_000
#: the files of a dataset that say what it is and which split each record is in
DATASET_METADATA = ("dataset.json", "records.jsonl", "records.json")
#: DVC's pointer files, taken into snapshots with the dataset metadata
DVC_FILES = ("*.dvc", "dvc.lock")
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
        skipped: project-relative paths left out because they exceed the size
            limit (branch mode).
        mode: ``"refs"`` or ``"branch"``.
        pointers: project-relative paths recorded as pointer files (refs mode).
    """

    commit: str | None
    ref: str | None = None
    reason: str = ""
    skipped: tuple[str, ...] = ()
    mode: str = "refs"
    pointers: tuple[str, ...] = ()

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
    # one git process for all of it (a snapshot's fixed cost), while HEAD has a commit
    where = ["rev-parse", "--show-toplevel", "--absolute-git-dir", "--show-prefix"]
    args = [*where, "HEAD^{commit}", "--symbolic-full-name", "HEAD"]
    done = _run(git, args, root, env, check=False)
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    if done.returncode == 0 and len(lines) == 5:
        return GitInfo(
            git=git,
            toplevel=Path(lines[0]),
            git_dir=Path(lines[1]),
            prefix=lines[2],
            head=lines[3],
            branch=lines[4] if lines[4].startswith("refs/") else None,
            env=env,
        )
    done = _run(git, where, root, env, check=False)
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
    max_file_size: int | None = DEFAULT_MAX_FILE_SIZE,
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
        max_file_size: new or changed files larger than this many bytes are
            recorded as pointers (refs mode) or left out (branch mode); ``None``:
            no limit.
        mode: ``"refs"`` (hidden ref, nothing of the user's touched) or ``"branch"``.
        include: directories or files inside ``root`` recorded even when
            ``.gitignore`` ignores them (a run's output directory, for the
            ``after`` snapshot); the size limit applies. Refs mode only: branch
            mode never starts tracking ignored files.
        data_dir: the datasets area relative to ``root``: its files that git does
            not track yet are left out (the data is recorded by its hash instead),
            except each dataset's metadata (:data:`DATASET_METADATA`), which goes
            in by the size rule. ``None``: nothing left out.
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
        return _branch_commit(
            info, cwd, message, max_file_size, data_dir, git_timeout, lock_timeout
        )
    # mlbook's own commits: no user hooks (update-ref would run reference-transaction)
    git = _Git(info, cwd, git_timeout, _NO_HOOKS)
    tree, pointers = _build_tree(git, max_file_size, include, data_dir)
    parents = ["-p", info.head] if info.head else []
    env = info.env if has_identity(info) else {**info.env, **_FALLBACK_IDENTITY}
    commit = _out(git.run(["commit-tree", tree, *parents], env=env, stdin=message.encode()))
    git.run(["update-ref", "-m", f"mlbook: {message}", ref, commit])
    return Snapshot(commit=commit, ref=ref, mode="refs", pointers=pointers)


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
    max_file_size: int | None,
    include: Sequence[Path | str] = (),
    data_dir: str | None = None,
) -> tuple[str, tuple[str, ...]]:
    """Write the tree of the working files (temporary index): its hash, and the pointed paths.

    A file that vanishes while git reads it (someone's temporary file) fails
    ``git add``; the build then starts again from a fresh copy of the index,
    leaving that file out (it is gone).
    """
    gone: list[str] = []
    attempt = 0
    while True:
        try:
            return _build_tree_once(git, max_file_size, include, data_dir, gone)
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
    max_file_size: int | None,
    include: Sequence[Path | str],
    data_dir: str | None,
    gone: Sequence[str] = (),
) -> tuple[str, tuple[str, ...]]:
    info, cwd = git.info, git.cwd
    changed, large = _split_by_size(cwd, _changed_files(git, data_dir), max_file_size, deleted=True)
    forced, too_big = _split_by_size(cwd, _included_files(cwd, include), max_file_size)
    metadata, big_metadata = _split_by_size(cwd, _dataset_metadata(cwd, data_dir), max_file_size)
    left_out = {*gone}
    big = sorted({*large, *too_big, *big_metadata} - left_out)
    # the files to stage are known: one update-index, no second walk of the tree
    small = sorted({*changed, *forced, *metadata} - left_out)
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
        if small:
            # --remove: a deleted file leaves the tree; one that vanished since is skipped
            args = ["update-index", "--add", "--remove", "-z", "--stdin"]
            git.run(args, env=env, stdin="\0".join(small).encode("utf-8", "surrogateescape"))
        pointed = _add_pointers(git, env, big, Path(tmp))
        tree = _out(git.run(["write-tree"], env=env))
    return tree, pointed


def _add_pointers(
    git: _Git, env: dict[str, str], names: Sequence[str], tmp: Path
) -> tuple[str, ...]:
    """Stage a pointer file (path, sha256, size) at each of ``names`` instead of its bytes."""
    if not names:
        return ()
    from mlbook.provenance.pointers import HashCache

    state = git.cwd / _STATE_DIR
    cache = HashCache(state if state.is_dir() else None)
    pointers = [p for p in (cache.pointer(git.cwd, name) for name in names) if p is not None]
    cache.save()
    if not pointers:
        return ()
    files = []
    for number, pointer in enumerate(pointers):
        path = tmp / f"pointer-{number}"
        path.write_bytes(pointer.to_bytes())
        files.append(str(path))
    hashed = git.run(["hash-object", "-w", "--stdin-paths"], stdin="\n".join(files).encode())
    blobs = _out(hashed).split()
    lines = "".join(
        f"100644 {blob}\t{git.info.prefix}{pointer.path}\0"
        for blob, pointer in zip(blobs, pointers, strict=True)
    )
    git.run(
        ["update-index", "--add", "-z", "--index-info"],
        env=env,
        stdin=lines.encode("utf-8", "surrogateescape"),
    )
    return tuple(p.path for p in pointers)


def _split_by_size(
    cwd: Path, names: Sequence[str], max_file_size: int | None, *, deleted: bool = False
) -> tuple[list[str], list[str]]:
    """``names`` (relative to ``cwd``): (within the limit, over it); a vanished file is
    dropped, or kept with the small ones when ``deleted`` (its deletion is recorded)."""
    small: list[str] = []
    big: list[str] = []
    for name in names:
        try:
            size = (cwd / name).lstat().st_size
        except OSError:
            if deleted:
                small.append(name)
            continue
        (big if max_file_size is not None and size > max_file_size else small).append(name)
    return small, big


def _dataset_metadata(cwd: Path, data_dir: str | None) -> list[str]:
    """Each dataset's metadata files, one or two levels under the datasets area, and
    the DVC files (``*.dvc``, ``dvc.lock``) up to two levels under it."""
    if data_dir is None:
        return []
    base = cwd / data_dir
    if not base.is_dir():
        return []
    found: set[str] = set()
    patterns = [f"{depth}/{name}" for depth in ("*", "*/*") for name in DATASET_METADATA]
    # DVC's files say which data version a run used (`mlbook data restore` reads them)
    patterns += [f"{depth}{name}" for depth in ("", "*/", "*/*/") for name in DVC_FILES]
    for pattern in patterns:
        for path in base.glob(pattern):
            with contextlib.suppress(OSError):
                if path.is_file() and not path.is_symlink():
                    found.add(path.relative_to(cwd).as_posix())
    return sorted(found)


def _included_files(cwd: Path, include: Sequence[Path | str]) -> list[str]:
    """Files under the ``include`` paths, relative to ``cwd``."""
    found: list[str] = []
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
            except OSError:
                continue  # vanished meanwhile
            found.append(path.relative_to(cwd).as_posix())
    return found


def _add_all(git: _Git, env: dict[str, str], pathspec: bytes) -> None:
    args = ["add", "-A", "--pathspec-from-file=-", "--pathspec-file-nul"]
    git.run(args, env=env, stdin=pathspec)


def _add_unignored(git: _Git, env: dict[str, str], names: Sequence[str]) -> None:
    """``git add`` the files among ``names`` that ``.gitignore`` does not ignore (branch mode)."""
    if not names:
        return
    spec = "\0".join(f":(literal){name}" for name in names)
    args = ["add", "--ignore-errors", "--pathspec-from-file=-", "--pathspec-file-nul"]
    git.run(args, env=env, stdin=spec.encode("utf-8", "surrogateescape"), check=False)


def _glob_escape(path: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]\\" else c for c in path)


def _large_files(
    git: _Git, max_file_size: int | None, data_dir: str | None = None
) -> tuple[str, ...]:
    """New or modified files under the directory over the limit, relative to it."""
    if max_file_size is None:
        return ()
    limit = max_file_size
    big: set[str] = set()
    for name in _changed_files(git, data_dir):
        try:
            size = (git.cwd / name).lstat().st_size
        except OSError:
            continue  # deleted: git add -A records the deletion
        if size > limit:
            big.add(name)
    return tuple(sorted(big))


def _changed_files(git: _Git, data_dir: str | None = None) -> list[str]:
    """Modified, deleted and untracked (not ignored) files under the directory, relative
    to it; mlbook's state, temporary files and untracked data left out."""
    args = ["ls-files", "-z", "-m", "-o", "--exclude-standard", "--", ".", *_EXCLUDED]
    if data_dir is not None:
        args.append(_exclude_dir(data_dir))
    done = git.run(args)
    names = done.stdout.decode("utf-8", "surrogateescape").split("\0")
    # a nested repository is listed as its directory ("vendor/"): staged as its commit
    return sorted({name.removesuffix("/") for name in names if name})


def _exclude_file(name: str) -> str:
    """A pathspec leaving out file ``name``, ignored or not (see :func:`_exclude_dir`)."""
    escaped = _glob_escape(name)
    head = f"[{escaped[0]}]" if escaped[0] != "[" else escaped[:3]
    rest = escaped[1:] if escaped[0] != "[" else escaped[3:]
    return f":(exclude,glob){head}{rest}"


def _exclude_dir(path: str) -> str:
    """A pathspec leaving out directory ``path`` (relative), ignored by .gitignore or not.

    `git add` fails ("paths are ignored by one of your .gitignore files") when the
    part of a pathspec before its first wildcard names an ignored path, exclusions
    included; a first character written as a class (``[D]atasets/**``) has none.
    """
    return f"{_exclude_file(path.strip('/'))}/**"


# what no snapshot holds, whatever .gitignore says: mlbook's state and temporary files
_EXCLUDED = (_exclude_dir(_STATE_DIR), f":(exclude,glob)**/*{TEMP_SUFFIX}")


def _pathspec(skipped: Sequence[str], data_dir: str | None = None) -> bytes:
    specs = [".", *_EXCLUDED, *(_exclude_file(name) for name in skipped)]
    if data_dir is not None:
        specs.append(_exclude_dir(data_dir))
    return "\0".join(specs).encode("utf-8", "surrogateescape")


def has_identity(info: GitInfo) -> bool:
    """True when git knows who commits (``user.name``/``user.email`` or the env vars).

    Asked once per repository and identity variables in a process (a runner takes
    two snapshots a run).
    """
    names = ("GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL")
    return _has_identity(info.git, info.toplevel, tuple(info.env.get(n, "") for n in names))


@functools.lru_cache(maxsize=16)
def _has_identity(git: str, toplevel: Path, identity: tuple[str, ...]) -> bool:
    env = {**os.environ, "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}
    done = _run(git, ["var", "GIT_COMMITTER_IDENT"], toplevel, env, check=False)
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
    max_file_size: int | None,
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
                return _branch_commit_once(git, head, message, max_file_size, data_dir, gone)
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
    max_file_size: int | None,
    data_dir: str | None,
    gone: Sequence[str] = (),
) -> Snapshot:
    info = git.info
    metadata, big_metadata = _split_by_size(
        git.cwd, _dataset_metadata(git.cwd, data_dir), max_file_size
    )
    skipped = tuple(sorted({*_large_files(git, max_file_size, data_dir), *big_metadata}))
    _add_all(git, info.env, _pathspec((*skipped, *gone), data_dir))
    _add_unignored(git, info.env, [name for name in metadata if name not in gone])
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


@dataclass(frozen=True)
class Checkout:
    """What :func:`checkout` wrote.

    Attributes:
        path: the directory written.
        commit: the full hash of the commit it holds.
        restored: paths (relative to ``path``) of pointed files whose bytes were put back.
        missing: paths of pointed files whose bytes are gone (their pointer was
            written in their place; only with ``missing_ok``).
    """

    path: Path
    commit: str
    restored: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


def checkout(
    root: Path | str,
    commit: str,
    dest: Path | str,
    stage: str = "before",
    *,
    missing_ok: bool = False,
    label: str | None = None,
) -> Checkout:
    """Write the project's files as of ``commit`` into ``dest`` (a plain export).

    ``commit`` may be a commit, a ref, or a run id (its ``stage`` snapshot, see
    :func:`resolve`). ``dest`` must not exist or be an empty directory. Only the
    project's part of the repository is written, so ``dest`` looks like the project
    root. A file recorded as a pointer gets its bytes back from the project when
    it still has them (same path, size and sha256).

    The files are written in a temporary directory beside ``dest`` and renamed
    into place: ``dest`` is complete or not there.

    Raises:
        ProvenanceError: unknown commit, ``dest`` not empty, no git; a pointed
            file whose bytes are gone (unless ``missing_ok``: then its pointer is
            written in its place and named in :attr:`Checkout.missing`). ``label``
            names what is checked out in that message (default: ``commit``).
    """
    from mlbook.provenance.pointers import restore_pointers

    info, cwd = _require(root)
    full = resolve(cwd, commit, stage)
    target = Path(dest).resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ProvenanceError(f"{target} exists and is not an empty directory; choose a new one")
    treeish = f"{full}:{info.prefix}" if info.prefix else full
    archive = _run(info.git, ["archive", "--format=tar", treeish], info.toplevel, info.env)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.checkout-", dir=target.parent))
    try:
        import tarfile

        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(staging, filter="data")
        done = restore_pointers(staging, cwd)
        missing = tuple(p.path for p in done.missing)
        if missing and not missing_ok:
            shown = ", ".join(missing[:3]) + (
                f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            )
            raise ProvenanceError(
                f"{len(missing)} file(s) of {label or commit} were recorded as pointers and "
                f"their bytes are gone from the project: {shown}; nothing was written "
                "(pass --missing-ok to write the rest, with the pointers in their place)"
            )
        if target.exists():
            target.rmdir()
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Checkout(target, full, done.restored, missing)


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
    right = resolve(cwd, b) if b is not None else _build_tree(_Git(info, cwd), None)[0]
    revs = [resolve(cwd, a), right]
    spec = [f":(literal){p}" for p in paths] if paths is not None else ["."]
    done = _run(
        info.git,
        ["diff", "--no-color", "--no-ext-diff", "--relative", *revs, "--", *spec],
        cwd,
        info.env,
    )
    return done.stdout.decode("utf-8", "replace")


# -- moving run snapshots between clones (mlbook.transfer) --------------------------------

#: seconds a bundle may take to write or read (a whole history can be large)
BUNDLE_TIMEOUT = 600.0


def _plain(root: Path | str) -> tuple[str, Path, dict[str, str]]:
    """git, the directory and the environment, without asking git anything yet.

    The transfer helpers run one git command each; git itself says when the
    directory is not in a repository (a :class:`ProvenanceError` then).
    """
    git = shutil.which("git")
    if git is None:
        raise ProvenanceError("git not found on PATH: install git to move runs' commits")
    env = {**os.environ, "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}
    env.pop("GIT_INDEX_FILE", None)
    return git, Path(root).resolve(), env


def root_commits(root: Path | str) -> tuple[str, ...]:
    """The root commits of ``HEAD``'s history, sorted: what two clones of a project share.

    Empty without git, outside a repository, or before the first commit.
    """
    git = shutil.which("git")
    if git is None:
        return ()
    git, cwd, env = _plain(root)
    done = _run(git, ["rev-list", "--max-parents=0", "HEAD"], cwd, env, check=False)
    return tuple(sorted(_out(done).split())) if done.returncode == 0 else ()


def run_refs(root: Path | str, run_ids: Collection[str] | None = None) -> dict[str, str]:
    """Hidden run refs (``refs/mlbook/runs/<id>/<stage>`` -> commit), of ``run_ids`` when given.

    Raises:
        ProvenanceError: no git, or not a repository.
    """
    git, cwd, env = _plain(root)
    done = _run(git, ["for-each-ref", "--format=%(objectname) %(refname)", REF_PREFIX], cwd, env)
    refs: dict[str, str] = {}
    for line in _out(done).splitlines():
        commit, _, ref = line.partition(" ")
        parts = ref.split("/")
        if len(parts) == 5 and (run_ids is None or parts[3] in run_ids):
            refs[ref] = commit
    return refs


def bundle_refs(root: Path | str, refs: Sequence[str], destination: Path | str) -> None:
    """Write a git bundle holding ``refs`` and every commit they reach to ``destination``.

    Raises:
        ProvenanceError: no git, no refs, or git failing.
    """
    if not refs:
        raise ProvenanceError("bundle_refs: no refs to bundle")
    git, cwd, env = _plain(root)
    args = ["bundle", "create", "-q", str(Path(destination).resolve()), "--stdin"]
    _run(git, args, cwd, env, "".join(f"{r}\n" for r in refs).encode(), True, BUNDLE_TIMEOUT)


def bundle_heads(root: Path | str, bundle: Path | str) -> dict[str, str]:
    """The refs a bundle holds (ref -> commit); the repository is not changed.

    Raises:
        ProvenanceError: not a bundle git can read; no git.
    """
    git, cwd, env = _plain(root)
    path = str(Path(bundle).resolve())
    done = _run(git, ["bundle", "list-heads", path], cwd, env, timeout=BUNDLE_TIMEOUT)
    heads: dict[str, str] = {}
    for line in _out(done).splitlines():
        commit, _, ref = line.partition(" ")
        heads[ref] = commit
    return heads


def unbundle(root: Path | str, bundle: Path | str) -> None:
    """Store a bundle's objects in the repository without creating or moving any ref.

    git checks first that the repository has the commits the bundle builds on.

    Raises:
        ProvenanceError: the bundle needs commits this repository lacks, is damaged,
            or git fails.
    """
    git, cwd, env = _plain(root)
    path = str(Path(bundle).resolve())
    _run(git, ["bundle", "unbundle", path], cwd, env, timeout=BUNDLE_TIMEOUT)


def create_refs(root: Path | str, refs: Mapping[str, str]) -> list[str]:
    """Create the refs that do not exist yet, in one transaction; existing ones are left.

    Returns:
        the refs created, sorted.

    Raises:
        ProvenanceError: a ref outside ``refs/mlbook/runs/``, a commit the
            repository does not have, or git failing.
    """
    git, cwd, env = _plain(root)
    existing = run_refs(cwd)
    new = {ref: commit for ref, commit in sorted(refs.items()) if ref not in existing}
    for ref in new:
        parts = ref.split("/")
        if len(parts) != 5 or run_ref(parts[3], parts[4]) != ref:
            raise ProvenanceError(f"{ref!r} is not a run ref ({REF_PREFIX}/<run-id>/<stage>)")
    if new:
        lines = "".join(f"create {ref} {commit}\n" for ref, commit in new.items())
        _run(git, [*_NO_HOOKS, "update-ref", "--stdin"], cwd, env, lines.encode())
    return list(new)
