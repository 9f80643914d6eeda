"""Verify a bundle in a clean child process, the way deployment code will load it.

The parent (:func:`verify_bundle`) starts ``python -m mlbook.deploy.verify`` with
its working directory in a fresh temporary directory outside the project, no
``PYTHONPATH`` but mlbook's own, and safe-path mode (so neither the working
directory nor ``Models/`` is on ``sys.path``; the child checks this and fails
if any path inside the project is importable).

With ``finish`` (what ``mlbook export`` uses) the child also does the
framework's part of the export, so the exporting process never imports torch:
it converts PyTorch weights to safetensors, seals and signs the manifest (with
the project's key, ``--signing-key``), loads the bundle through
:func:`mlbook.load` trusting only that key (signature and every hash checked),
calls the script's ``@exp.sample`` hook, runs one prediction, records the
sample input, optionally writes ``model.onnx`` and compares onnxruntime with
PyTorch on the sample, and seals and signs the manifest again with what it
verified. Without ``finish`` the child only loads the bundle (trusting the keys
given with ``--trusted-key``, else the defaults of :func:`mlbook.load`) and
predicts on its recorded sample; it writes nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import site
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from mlbook.errors import ExportError

if TYPE_CHECKING:
    from mlbook.deploy.signing import PublicKey

__all__ = ["ONNX_TOLERANCE", "VerifyReport", "main", "verify_bundle"]

#: Largest absolute difference accepted between onnxruntime and the framework.
ONNX_TOLERANCE = 1e-3
_ONNX_FILE = "model.onnx"


@dataclass(frozen=True)
class VerifyReport:
    """What the clean child process found.

    Attributes:
        seconds: wall time of the child process.
        predicted: whether a prediction ran (needs a sample input).
        output: a short description of the prediction (``tensor(1, 10) float32``).
        onnx_max_abs_diff: onnxruntime against the framework on the sample, if ONNX was made.
    """

    seconds: float
    predicted: bool
    output: str
    onnx_max_abs_diff: float | None = None


def _clean_env() -> dict[str, str]:
    import mlbook

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    home = Path(mlbook.__file__).resolve().parent.parent
    if str(home) not in {str(Path(p).resolve()) for p in site.getsitepackages()}:
        env["PYTHONPATH"] = str(home)  # a source checkout; site-packages need no help
    env["PYTHONSAFEPATH"] = "1"
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def verify_bundle(
    path: Path | str,
    *,
    finish: bool = False,
    onnx: bool = False,
    forbid: Path | str | None = None,
    timeout: float = 600.0,
    signing_key: Path | str | None = None,
    trusted_keys: Sequence[PublicKey] | None = None,
    name: str | None = None,
) -> VerifyReport:
    """Load ``path`` in a clean child process and run one prediction.

    Args:
        path: the bundle directory.
        finish: let the child complete the bundle first (weights, sample, ONNX,
            manifest); used by :func:`mlbook.deploy.bundle.export_run`.
        onnx: with ``finish``, also write and check ``model.onnx``.
        forbid: a directory (the project) that must not be on the child's ``sys.path``.
        timeout: seconds before the child is stopped.
        signing_key: with ``finish``, the private key file that signs the bundle.
        trusted_keys: the keys the child trusts (default: those of :func:`mlbook.load`).
        name: how errors name the bundle (default: its path; an export being
            built names its destination, not its staging directory).

    Raises:
        ExportError: the child failed; the message is the child's error.
    """
    import subprocess

    root = Path(path).resolve()
    argv = [sys.executable, "-m", "mlbook.deploy.verify", str(root)]
    if finish:
        argv.append("--finish")
    if onnx:
        argv.append("--onnx")
    if forbid is not None:
        argv += ["--forbid", str(Path(forbid).resolve())]
    if signing_key is not None:
        argv += ["--signing-key", str(Path(signing_key).resolve())]
    with tempfile.TemporaryDirectory(prefix="mlbook-verify-") as work:
        for number, key in enumerate(trusted_keys or []):
            key_file = Path(work) / f"trusted-{number}.pub"
            key_file.write_bytes(key.to_pem())
            argv += ["--trusted-key", str(key_file)]
        report_path = Path(work) / "report.json"
        argv += ["--report", str(report_path)]
        start = time.perf_counter()
        try:
            done = subprocess.run(
                argv, cwd=work, env=_clean_env(), capture_output=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise ExportError(
                f"{name or root}: verification did not finish in {timeout:.0f} s; "
                "check the model hook"
            ) from exc
        seconds = time.perf_counter() - start
        report: dict[str, Any] = {}
        if report_path.is_file():
            report = orjson.loads(report_path.read_bytes())
    if done.returncode != 0 or not report.get("ok"):
        error = report.get("error") or _last_line(done.stderr) or f"exit code {done.returncode}"
        raise ExportError(f"{name or root}: verification in a clean process failed: {error}")
    return VerifyReport(
        seconds=seconds,
        predicted=bool(report.get("predicted")),
        output=str(report.get("output", "")),
        onnx_max_abs_diff=report.get("onnx_max_abs_diff"),
    )


def _last_line(stderr: bytes) -> str:
    lines = [line for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


# -- the child ------------------------------------------------------------------------


def describe(value: Any) -> str:
    """A short description of a prediction: type, shape and dtype when there are any."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        kind = type(value).__name__.lower()
        dtype = str(getattr(value, "dtype", "")).replace("torch.", "")
        return f"{kind}{tuple(shape)} {dtype}".strip()
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}[{len(value)}]"
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}: {describe(v)}" for k, v in list(value.items())[:4]) + ")"
    return type(value).__name__


def _convert_weights(root: Path, weights: list[str], kind: str) -> tuple[list[str], str]:
    """Turn PyTorch state dicts into safetensors when every value is a plain tensor."""
    if kind != "torch":
        return weights, kind
    try:
        import torch
        from safetensors.torch import save_file
    except ImportError:
        return weights, kind
    converted: list[str] = []
    for name in weights:
        source = root / name
        state = torch.load(source, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            return weights, kind
        target = source.with_suffix(".safetensors")
        try:
            save_file({k: v.contiguous() for k, v in state.items()}, str(target))
        except Exception:  # shared tensors (tied weights) stay in torch's format
            target.unlink(missing_ok=True)
            return weights, kind
        converted.append(target.relative_to(root).as_posix())
    for name in weights:
        (root / name).unlink()
    return converted, "safetensors"


def _save_sample(root: Path, sample: Any) -> str:
    try:
        data = orjson.dumps(sample, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        import torch

        target = root / "sample.pt"
        torch.save(sample, target)
        torch.load(target, map_location="cpu", weights_only=True)  # must load back safely
        return "sample.pt"
    (root / "sample.json").write_bytes(data)
    return "sample.json"


def _onnx(root: Path, model: Any, given: Any, hook: str) -> tuple[float, int | None]:
    """Export ``model`` to ``model.onnx`` and return (max abs diff vs PyTorch, opset).

    ``given`` is the model's own input, from ``hook`` (``onnx_input``, or
    ``sample`` when the script has no ``onnx_input``). It is run through the
    model first, so an input the model does not take fails in milliseconds with
    one line naming the hook to add, not after a long torch.export attempt.
    """
    import warnings

    import torch

    add_hook = (
        "add an @exp.onnx_input hook that returns the model's own input tensor "
        "(the sample goes through predict, which may preprocess it)"
        if hook == "sample"
        else "make @exp.onnx_input return the tensor the model takes"
    )
    if not isinstance(model, torch.nn.Module):
        raise ExportError("--onnx needs a PyTorch model (torch.nn.Module); export without --onnx")
    if not isinstance(given, torch.Tensor):
        raise ExportError(
            f"--onnx: the @exp.{hook} input is a {type(given).__name__}, not a tensor; {add_hook}"
        )
    try:
        with torch.no_grad():
            reference = model(given)
    except Exception as exc:
        raise ExportError(
            f"--onnx: the model cannot take the @exp.{hook} input as it is "
            f"({type(exc).__name__}: {_first_line(exc)}); {add_hook}"
        ) from exc
    if not isinstance(reference, torch.Tensor):
        raise ExportError("--onnx needs the model to return one tensor; export without --onnx")
    target = root / _ONNX_FILE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                (given,),
                str(target),
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                dynamo=False,
            )
        except Exception:
            target.unlink(missing_ok=True)
            try:  # the model ran on this input: torch.export may manage what tracing could not
                torch.onnx.export(model, (given,), str(target), dynamo=True)
            except Exception as exc:
                target.unlink(missing_ok=True)
                raise ExportError(
                    f"--onnx: torch cannot export the model to ONNX ({type(exc).__name__}: "
                    f"{_first_line(exc)}); export without --onnx"
                ) from exc
    import onnx
    import onnxruntime

    opset = next((o.version for o in onnx.load(str(target)).opset_import if o.domain == ""), None)
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: given.detach().cpu().numpy()}
    ort_out = session.run(None, feed)[0]
    diff = float(abs(ort_out - reference.detach().cpu().numpy()).max())
    if not math.isfinite(diff) or diff > ONNX_TOLERANCE:
        raise ExportError(
            f"onnxruntime differs from PyTorch by {diff:.3g} (> {ONNX_TOLERANCE}) on the "
            f"@exp.{hook} input; export without --onnx"
        )
    return diff, opset


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _check_isolation(forbid: Path | None) -> None:
    if forbid is None:
        return
    for entry in [os.getcwd(), *sys.path]:
        resolved = Path(entry or os.getcwd()).resolve()
        if resolved == forbid or forbid in resolved.parents:
            raise ExportError(
                f"the verifying process can import from {resolved}, inside the project; "
                "unset PYTHONPATH and retry"
            )


def _finish(root: Path, onnx: bool, signing_key: Path | None) -> dict[str, Any]:
    from mlbook.deploy.loader import load
    from mlbook.deploy.manifest import OnnxInfo, Verification, read_manifest, write_manifest
    from mlbook.deploy.signing import SigningKey, sign_bundle

    if signing_key is None:
        raise ExportError("--finish needs --signing-key: an export is always signed")
    key = SigningKey.read(signing_key)
    start = time.perf_counter()
    manifest = read_manifest(root)
    weights, kind = _convert_weights(root, manifest.weights, manifest.weights_format)
    manifest = write_manifest(
        root, msgspec.structs.replace(manifest, weights=weights, weights_format=kind)
    )
    sign_bundle(root, key)
    loaded = load(root, trusted_keys=[key.public])
    hooks = loaded.experiment.hooks
    hook = hooks.get("sample")
    report: dict[str, Any] = {"ok": True, "predicted": False, "output": ""}
    sample_file = None
    onnx_info = None
    sample: Any = None
    if hook is not None:
        sample = hook(loaded.params)
        report["output"] = describe(loaded.predict(sample))
        report["predicted"] = True
        sample_file = _save_sample(root, sample)
    if onnx:
        if "onnx_input" in hooks:
            given, source = hooks["onnx_input"](loaded.params), "onnx_input"
        elif hook is not None:
            given, source = sample, "sample"
        else:
            raise ExportError(
                f"{manifest.entry_point}: --onnx needs the model's input; add an "
                "@exp.onnx_input (or @exp.sample) hook"
            )
        diff, opset = _onnx(root, loaded.model, given, source)
        report["onnx_max_abs_diff"] = diff
        onnx_info = OnnxInfo(file=_ONNX_FILE, opset=opset, max_abs_diff=diff)
    verification = Verification(
        ok=True,
        seconds=round(time.perf_counter() - start, 3),
        predicted=report["predicted"],
        output=report["output"],
        python=sys.version.split()[0],
    )
    write_manifest(
        root,
        msgspec.structs.replace(
            manifest, sample_file=sample_file, onnx=onnx_info, verification=verification
        ),
    )
    sign_bundle(root, key)
    return report


def _check(root: Path, trusted: list[str] | None) -> dict[str, Any]:
    from mlbook.deploy.loader import load

    loaded = load(root, trusted_keys=trusted)
    sample = loaded.sample()
    if sample is None:
        return {"ok": True, "predicted": False, "output": ""}
    return {"ok": True, "predicted": True, "output": describe(loaded.predict(sample))}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child: ``python -m mlbook.deploy.verify BUNDLE --report FILE``."""
    parser = argparse.ArgumentParser(prog="python -m mlbook.deploy.verify")
    parser.add_argument("bundle")
    parser.add_argument("--report", required=True)
    parser.add_argument("--finish", action="store_true")
    parser.add_argument("--onnx", action="store_true")
    parser.add_argument("--forbid")
    parser.add_argument("--signing-key")
    parser.add_argument("--trusted-key", action="append")
    args = parser.parse_args(argv)
    root = Path(args.bundle)
    report: dict[str, Any]
    try:
        _check_isolation(Path(args.forbid) if args.forbid else None)
        if args.finish:
            key = Path(args.signing_key) if args.signing_key else None
            report = _finish(root, args.onnx, key)
        else:
            report = _check(root, args.trusted_key)
    except Exception as exc:
        message = str(exc) if isinstance(exc, ExportError) else f"{type(exc).__name__}: {exc}"
        report = {"ok": False, "error": " ".join(message.split())}
        import traceback

        traceback.print_exc()
    Path(args.report).write_bytes(orjson.dumps(report))
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
