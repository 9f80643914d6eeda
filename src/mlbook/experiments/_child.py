"""What runs inside each child process: one version of one experiment.

Started by the local backend as ``python -m mlbook.experiments._child SPEC``
(SPEC: a :class:`~mlbook.experiments.contract.RunSpec` as JSON). The child
changes to ``Models/``, puts it on ``sys.path``, imports the script, builds the
:class:`~mlbook.experiments.run.Run`, calls the hooks and reports everything to
the runner through its :class:`~mlbook.experiments.metrics.Outbox`: metrics in
batches, artifacts, the project files it imported (collected at the end, so
lazy imports inside ``train`` count) and its final status.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlbook.experiments.contract import RunSpec

__all__ = ["main"]

_OWN_DIR = str(Path(__file__).resolve().parents[1])


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
    summary = traceback.TracebackException.from_exception(exc)
    frames = [f for f in summary.stack if not f.filename.startswith(_OWN_DIR)]
    summary.stack = traceback.StackSummary.from_list(frames)
    return "".join(summary.format()).rstrip()


def _imported_files(root: Path) -> list[str]:
    """Files of modules imported from inside the project (not from a virtualenv)."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    found: set[str] = set()
    root_text = str(root) + os.sep
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if not filename:
            continue
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
    from mlbook.experiments.api import call_train
    from mlbook.experiments.contract import Channel
    from mlbook.experiments.discovery import load_script
    from mlbook.experiments.metrics import Outbox
    from mlbook.experiments.run import Run
    from mlbook.experiments.seeds import seed_run

    outbox = Outbox(Channel(spec.events_fd, spec.ack_fd))
    models_dir = Path(spec.models_dir)
    root = Path(spec.project_root)
    os.chdir(models_dir)
    if str(models_dir) not in sys.path:
        sys.path.insert(0, str(models_dir))
    status, metrics, error = "failed", {}, None
    try:
        exp = load_script(Path(spec.script), models_dir, isolate=False)
        seed_run(exp, spec)  # the run's seed, applied before the model hook builds the weights
        run = Run(
            id=spec.run_id,
            experiment=spec.experiment,
            version=spec.version,
            mode=spec.mode,
            params=exp.params(spec.version),
            dir=Path(spec.dir),
            project_root=root,
            models_dir=models_dir,
            dataset_dir=Path(spec.dataset_dir) if spec.dataset_dir else None,
            resume_dir=Path(spec.resume_dir) if spec.resume_dir else None,
            source_weights=Path(spec.source_weights) if spec.source_weights else None,
            test_steps=spec.test_steps,
            outbox=outbox,
        )
        run.dir.mkdir(parents=True, exist_ok=True)
        model = exp.build_model(run.params)
        if spec.mode == "export":
            hook = exp.hooks.get("export")
            if hook is None:
                raise RuntimeError("export mode needs an export hook: decorate it with @exp.export")
            metrics = _clean_metrics(hook(run, model), "export")
        else:
            metrics = _clean_metrics(call_train(exp, run, model), "train")
            if "evaluate" in exp.hooks:
                metrics.update(_clean_metrics(exp.hooks["evaluate"](run, model), "evaluate"))
        status = "completed"
    except KeyboardInterrupt as exc:
        status, error = "interrupted", _format_error(exc) or "KeyboardInterrupt"
    except SystemExit as exc:
        status = "failed"
        error = f"sys.exit({exc.code!r}) called before the hooks returned\n{_format_error(exc)}"
    except BaseException as exc:
        status, error = "failed", _format_error(exc)
    try:
        outbox.finish(_imported_files(root), _top_level_modules(), status, metrics, error)
    except OSError:  # the runner is gone (BrokenPipeError) or the pipe broke
        return 3
    return {"completed": 0, "interrupted": 130}.get(status, 1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m mlbook.experiments._child SPEC_JSON``."""
    import msgspec

    from mlbook.experiments.contract import RunSpec

    _die_with_parent()
    args = sys.argv[1:] if argv is None else argv
    spec = msgspec.json.decode(args[0], type=RunSpec)
    sys.argv = [spec.script]
    code = run_child(spec)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
