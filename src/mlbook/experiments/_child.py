"""What runs inside each child process: one version of one experiment.

Started by the local backend as ``python -m mlbook.experiments._child SPEC``
(SPEC: a :class:`~mlbook.experiments.contract.RunSpec` as JSON). The child
changes to ``Models/``, puts it on ``sys.path``, imports the script, builds the
:class:`~mlbook.experiments.run.Run`, calls the hooks and reports everything to
the runner through its :class:`~mlbook.experiments.metrics.Outbox`: metrics in
batches, artifacts, the project files it imported (collected at the end, so
lazy imports inside ``train`` count) and its final status.

A plain script (``spec.argv`` set) runs as ``python script.py ARGS`` would:
``sys.argv`` is the script and its arguments, it runs as ``__main__``, and its
working directory is the run's output directory (``Models/`` stays on
``sys.path``). It completes when it returns or exits 0; its final metrics are
the last value of each series. Either kind of script is the current run of the
process (``mlbook.log`` works anywhere), and with ``spec.output_metrics`` its
output lines are read for metrics (:mod:`mlbook.experiments.output`). In test
mode ``PL_TRAINER_FAST_DEV_RUN`` is set, so a Lightning ``Trainer`` runs
``fast_dev_run`` with ``test_steps`` batches.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlbook.experiments.api import Params
    from mlbook.experiments.contract import RunSpec
    from mlbook.experiments.metrics import Outbox
    from mlbook.experiments.output import OutputTee
    from mlbook.experiments.run import Run

__all__ = ["main"]

_OWN_DIR = str(Path(__file__).resolve().parents[1])
_RUNPY = "<frozen runpy>"


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the runner dies (no orphans)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _format_error(exc: BaseException) -> str:
    """The traceback without mlbook's own frames (the user's code is what matters)."""
    import runpy

    summary = traceback.TracebackException.from_exception(exc)
    frames = [
        f
        for f in summary.stack
        if not f.filename.startswith(_OWN_DIR) and f.filename not in (runpy.__file__, _RUNPY)
    ]
    summary.stack = traceback.StackSummary.from_list(frames)
    return "".join(summary.format()).rstrip()


def _imported_files(root: Path) -> list[str]:
    """Files of modules imported from inside the project (not from a virtualenv)."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    found: set[str] = set()
    root_text = str(root) + os.sep
    for module in list(sys.modules.values()):
        # the module's own attribute: a module __getattr__ is not asked
        filename = getattr(module, "__dict__", {}).get("__file__")
        if not isinstance(filename, str) or not filename:
            continue
        if filename[:1] == os.sep and not filename.startswith(root_text) and ".." not in filename:
            continue  # most modules: absolute and outside the project (3 ms for torch's)
        path = os.path.abspath(filename)
        if not path.startswith(root_text) or "site-packages" in path:
            continue
        if any(path.startswith(p + os.sep) for p in prefixes) or path.startswith(_OWN_DIR):
            continue
        if os.path.isfile(path):
            found.add(path)
    return sorted(found)


def _top_level_modules() -> list[str]:
    """Top-level names of every loaded module (the runner maps them to package versions)."""
    return sorted({name.partition(".")[0] for name in list(sys.modules)})


def _clean_metrics(result: Any, where: str) -> dict[str, Any]:
    if result is None:
        return {}
    if not isinstance(result, dict):
        raise TypeError(f"the {where} hook must return a dict of metrics or None, got {result!r}")
    clean: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, (bool, str)) or value is None:
            clean[str(key)] = value
            continue
        try:
            clean[str(key)] = float(value)
        except (TypeError, ValueError):
            clean[str(key)] = str(value)
    return clean


def run_child(spec: RunSpec) -> int:
    """Run one version as described by ``spec``; returns the process exit code."""
    from mlbook import _active
    from mlbook.experiments.contract import Channel
    from mlbook.experiments.metrics import Outbox
    from mlbook.experiments.seeds import seed_run

    outbox = Outbox(Channel(spec.events_fd, spec.ack_fd))
    models_dir = Path(spec.models_dir)
    root = Path(spec.project_root)
    os.chdir(models_dir)
    if str(models_dir) not in sys.path:
        sys.path.insert(0, str(models_dir))
    if spec.mode == "test":
        os.environ.setdefault("PL_TRAINER_FAST_DEV_RUN", str(spec.test_steps))
    tee = _start_tee(spec, outbox)
    status, metrics, error = "failed", {}, None
    try:
        seed_run(spec)  # the run's seed, applied before the script or its model hook runs
        if spec.argv is None:
            metrics = _run_experiment(spec, outbox)
        else:
            _run_plain(spec, outbox)
        status = "completed"
    except KeyboardInterrupt as exc:
        status, error = "interrupted", _format_error(exc) or "KeyboardInterrupt"
    except _ScriptExit as exc:
        status, error = "failed", str(exc)
    except SystemExit as exc:
        status = "failed"
        error = f"sys.exit({exc.code!r}) called before the hooks returned\n{_format_error(exc)}"
    except BaseException as exc:
        status, error = "failed", _format_error(exc)
    _active.activate(None)
    sys.stdout.flush()
    sys.stderr.flush()
    if tee is not None:
        tee.stop()
        if isinstance(error, str) and error.startswith(_EXIT_PREFIX) and tee.tail:
            error += "\nlast output:\n" + "\n".join(tee.tail)
    try:
        if spec.argv is not None:
            outbox._send_points()  # so that the last values are known
            metrics = {**outbox.last, **metrics}
        outbox.finish(_imported_files(root), _top_level_modules(), status, metrics, error)
    except OSError:  # the runner is gone (BrokenPipeError) or the pipe broke
        return 3
    return {"completed": 0, "interrupted": 130}.get(status, 1)


_EXIT_PREFIX = "the script exited with code"


class _ScriptExit(Exception):
    """A plain script exited with a non-zero code."""


def _start_tee(spec: RunSpec, outbox: Outbox) -> OutputTee | None:
    """Tee fds 1 and 2 through a line reader (plain scripts, and output metrics)."""
    if spec.argv is None and not spec.output_metrics:
        return None
    from mlbook.experiments.output import LineParser, OutputTee

    on_line = None
    if spec.output_metrics:
        parse = LineParser(spec.output_patterns).parse
        log_output = outbox.log_output

        def on_line(line: str) -> None:
            step, values = parse(line)
            if values and step is not None:
                log_output(step, values)

    tee = OutputTee(on_line)
    tee.start()
    return tee


def _make_run(spec: RunSpec, params: Params, outbox: Outbox) -> Run:
    from mlbook import _active
    from mlbook.experiments.run import Run

    run = Run(
        id=spec.run_id,
        experiment=spec.experiment,
        version=spec.version,
        mode=spec.mode,
        params=params,
        dir=Path(spec.dir),
        project_root=Path(spec.project_root),
        models_dir=Path(spec.models_dir),
        dataset_dir=Path(spec.dataset_dir) if spec.dataset_dir else None,
        resume_dir=Path(spec.resume_dir) if spec.resume_dir else None,
        source_weights=Path(spec.source_weights) if spec.source_weights else None,
        test_steps=spec.test_steps,
        inner_steps=spec.inner_steps,
        outbox=outbox,
    )
    run.dir.mkdir(parents=True, exist_ok=True)
    _active.activate(run)
    return run


def _run_experiment(spec: RunSpec, outbox: Outbox) -> dict[str, Any]:
    """Import the script, build the model, call the hooks; the final metrics."""
    from mlbook.experiments.api import Params, call_train
    from mlbook.experiments.discovery import load_script

    exp = load_script(Path(spec.script), Path(spec.models_dir), isolate=False)
    params = exp.params(spec.base_version or spec.version)
    if spec.params:
        params = Params({**params, **spec.params})
    if spec.seed is not None and "seed" not in params:  # a seed from the config
        params = Params({**params, "seed": spec.seed})
    run = _make_run(spec, params, outbox)
    run.view = exp.view
    model = exp.build_model(run.params)
    if spec.mode == "export":
        hook = exp.hooks.get("export")
        if hook is None:
            raise RuntimeError("export mode needs an export hook: decorate it with @exp.export")
        return _clean_metrics(hook(run, model), "export")
    metrics = _clean_metrics(call_train(exp, run, model), "train")
    if "evaluate" in exp.hooks:
        metrics.update(_clean_metrics(exp.hooks["evaluate"](run, model), "evaluate"))
    return metrics


def _run_plain(spec: RunSpec, outbox: Outbox) -> None:
    """Run a plain script as ``python SCRIPT ARGS`` would, in the run's output directory.

    As at the end of ``python SCRIPT``, threads the script started (not daemons)
    are waited for and its ``atexit`` functions run.

    Raises:
        _ScriptExit: the script exited with a non-zero code.
    """
    import runpy

    from mlbook.experiments.api import Params

    if spec.mode == "export":
        raise RuntimeError(
            "export mode calls an export hook, and a plain script has none; "
            "use the mlbook.Experiment shape for --mode export"
        )
    run = _make_run(spec, Params(spec.params or {}), outbox)
    script = str(Path(spec.script).resolve())
    sys.argv = [script, *(spec.argv or [])]
    sys.path.insert(0, os.path.dirname(script))
    os.chdir(run.dir)
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        if code is None or code == 0:
            return
        if not isinstance(code, int):  # sys.exit("message") prints it and exits 1
            print(code, file=sys.stderr)
            code = 1
        raise _ScriptExit(f"{_EXIT_PREFIX} {code}") from None
    finally:
        _end_like_python()


def _end_like_python() -> None:
    """Wait for the script's own threads, then run its ``atexit`` functions."""
    import atexit
    import threading

    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()


def _wait_for_spec(fd: int) -> bytes:
    """A spare child: load what every run needs, then read the spec from ``fd`` (empty:
    the runner needed no child)."""
    import mlbook.experiments.api
    import mlbook.experiments.discovery
    import mlbook.experiments.metrics
    import mlbook.experiments.output
    import mlbook.experiments.run
    import mlbook.experiments.seeds  # noqa: F401

    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _log_to(path: str) -> None:
    """Make ``path`` (appended to) this process's stdout and stderr."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m mlbook.experiments._child SPEC_JSON``, or ``--wait FD``
    for a spare child that reads its spec from descriptor FD."""
    import msgspec

    from mlbook.experiments.contract import RunSpec

    _die_with_parent()
    args = sys.argv[1:] if argv is None else argv
    if args[0] == "--wait":
        data = _wait_for_spec(int(args[1]))
        if not data:
            os._exit(0)
        spec = msgspec.json.decode(data, type=RunSpec)
    else:
        spec = msgspec.json.decode(args[0], type=RunSpec)
    if spec.log is not None:
        _log_to(spec.log)
    sys.argv = [spec.script]
    code = run_child(spec)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
