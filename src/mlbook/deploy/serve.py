"""``mlbook serve``: one export bundle behind HTTP (FastAPI + uvicorn, extra ``serve``).

Endpoints:

- ``POST /predict``: JSON ``{"inputs": [[...]]}`` (a rectangular array of numbers,
  passed to the predict hook as a float32 tensor for PyTorch models, else a numpy
  array), JSON ``{"images": ["<base64>", ...]}`` (or ``"image"``), or a multipart
  form with image files; images reach the predict hook as a list of PIL images.
  Answers ``{"outputs": ...}``, plus ``"labels"`` (the class name of each row's
  highest score) when the outputs are one score per class.
- ``GET /health``: ``{"status": "ok", ...}``.
- ``GET /metadata``: the manifest, the class encoding and the params.

Malformed input gets a 4xx with ``{"error": "..."}``; a body over the size limit
gets 413 before it is read in full. The server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import base64
import binascii
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlbook.errors import ExportError

if TYPE_CHECKING:
    from mlbook.deploy.loader import LoadedModel

__all__ = ["DEFAULT_MAX_BYTES", "create_app", "serve"]

#: Default largest request body accepted by ``POST /predict`` (10 MiB).
DEFAULT_MAX_BYTES = 10 * 1024 * 1024


class _BadInput(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _require_extra() -> Any:
    try:
        import fastapi
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            "mlbook serve needs FastAPI and uvicorn; install them with "
            "`pip install 'mlbook[serve]'`"
        ) from exc
    return fastapi


def jsonable(value: Any) -> Any:
    """Tensors and arrays as nested lists; dicts, lists and numbers as they are."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _to_array(loaded: LoadedModel, inputs: Any) -> Any:
    if not isinstance(inputs, list) or not inputs:
        raise _BadInput(422, "'inputs' must be a non-empty array of numbers (nested for batches)")
    torch = sys.modules.get("torch")
    try:
        if torch is not None and isinstance(loaded.model, torch.nn.Module):
            return torch.tensor(inputs, dtype=torch.float32)
        import numpy

        array = numpy.asarray(inputs, dtype=numpy.float64)
    except (TypeError, ValueError, OverflowError, RuntimeError) as exc:
        raise _BadInput(422, f"'inputs' must be a rectangular array of numbers ({exc})") from exc
    return array


def _open_image(data: bytes, name: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise _BadInput(422, f"{name}: not a readable image ({exc})") from exc
    return image


def _decode_images(values: Any) -> list[Any]:
    items = values if isinstance(values, list) else [values]
    if not items:
        raise _BadInput(422, "'images' is empty; send at least one base64-encoded image")
    images = []
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise _BadInput(422, f"images[{index}]: expected a base64 string")
        text = item.split(",", 1)[1] if item.startswith("data:") else item
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _BadInput(422, f"images[{index}]: not valid base64 ({exc})") from exc
        images.append(_open_image(data, f"images[{index}]"))
    return images


def _parse_json(loaded: LoadedModel, body: bytes) -> Any:
    import orjson

    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _BadInput(400, f"the body is not valid JSON ({exc})") from exc
    if not isinstance(payload, dict):
        raise _BadInput(422, 'expected a JSON object: {"inputs": [...]} or {"images": [...]}')
    keys = [k for k in ("inputs", "images", "image") if k in payload]
    if len(keys) != 1:
        raise _BadInput(
            422, 'expected exactly one of "inputs", "images" or "image" in the JSON object'
        )
    if keys[0] == "inputs":
        return _to_array(loaded, payload["inputs"])
    return _decode_images(payload[keys[0]])


def _label_rows(loaded: LoadedModel, outputs: Any) -> list[str] | None:
    if loaded.labels is None or not hasattr(outputs, "shape") or len(outputs.shape) != 2:
        return None
    if outputs.shape[1] != len(loaded.labels):
        return None
    best = outputs.argmax(1 if hasattr(outputs, "detach") else -1).tolist()
    try:
        return [loaded.labels.decode(int(i)) for i in best]
    except Exception:
        return None


def create_app(bundle: LoadedModel | Path | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """A FastAPI app serving ``bundle`` (a loaded model or a bundle path).

    Raises:
        ExportError: FastAPI is missing, or the bundle does not load.
    """
    fastapi = _require_extra()
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    from mlbook.deploy.loader import LoadedModel, load

    loaded = bundle if isinstance(bundle, LoadedModel) else load(bundle)
    manifest = loaded.manifest
    app = fastapi.FastAPI(
        title=f"mlbook {manifest.experiment}/{manifest.version}",
        description=manifest.title,
        docs_url=None,
        redoc_url=None,
    )

    def error(status: int, message: str) -> Any:
        return JSONResponse({"error": message}, status_code=status)

    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "experiment": manifest.experiment,
            "version": manifest.version,
            "run_id": manifest.run_id,
        }

    def metadata() -> dict[str, Any]:
        import msgspec

        return {
            "manifest": msgspec.to_builtins(manifest),
            "labels": loaded.labels.to_dict() if loaded.labels is not None else None,
            "params": loaded.params.to_dict(),
        }

    async def predict(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            return error(413, f"the request body is larger than the limit of {max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                return error(413, f"the request body is larger than the limit of {max_bytes} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if content_type == "multipart/form-data":
                inputs = await _parse_form(request, body)
            elif content_type in ("application/json", ""):
                inputs = _parse_json(loaded, body)
            else:
                raise _BadInput(
                    415,
                    f"unsupported content type {content_type!r}; send application/json "
                    "or multipart/form-data",
                )
        except _BadInput as exc:
            return error(exc.status, exc.message)
        try:
            outputs = await run_in_threadpool(loaded.predict, inputs)
        except ExportError as exc:
            return error(501, str(exc))
        except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as exc:
            return error(422, f"the model could not use this input: {type(exc).__name__}: {exc}")
        answer: dict[str, Any] = {"outputs": jsonable(outputs)}
        labels = _label_rows(loaded, outputs)
        if labels is not None:
            answer["labels"] = labels
        return answer

    predict.__annotations__ = {"request": Request}
    app.add_api_route("/health", health, methods=["GET"], response_model=None)
    app.add_api_route("/metadata", metadata, methods=["GET"], response_model=None)
    app.add_api_route("/predict", predict, methods=["POST"], response_model=None)
    return app


async def _parse_form(request: Any, body: bytes) -> list[Any]:
    from starlette.requests import Request

    replay = Request(request.scope, _replay(body))
    images = []
    try:
        form = await replay.form()
    except Exception as exc:
        raise _BadInput(400, f"the multipart form cannot be parsed ({exc})") from exc
    try:
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                images.append(_open_image(await value.read(), f"form field {key!r}"))
    finally:
        await form.close()
    if not images:
        raise _BadInput(422, "the multipart form has no file; send images as file fields")
    return images


def _replay(body: bytes) -> Any:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def serve(
    path: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> None:
    """Load the bundle at ``path`` and serve it until interrupted.

    Raises:
        ExportError: FastAPI/uvicorn are missing, or the bundle does not load.
    """
    app = create_app(path, max_bytes=max_bytes)
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")
