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

No request gets a 500 for its input: malformed input gets a 4xx with ``{"error":
"..."}`` (never an object's repr), and the connection stays usable for the next
request. Numbers must be finite and fit the model's dtype (float32 for PyTorch);
an output that is not finite is a 422. A body over the size limit gets 413 before
it is read in full; an image over ``max_image_pixels`` (Pillow's
``MAX_IMAGE_PIXELS``, set explicitly) gets 413 before it is decoded; a body that
does not arrive within ``body_timeout`` seconds gets 408. Those three answer with
``Connection: close``. :func:`serve` adds uvicorn's keep-alive timeout and a
request-head timeout (a client that opens a connection and sends nothing, or
trickles its headers, is dropped). The server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import logging
import re
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlbook.errors import ExportError

if TYPE_CHECKING:
    from mlbook.deploy.loader import LoadedModel

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEAD_TIMEOUT",
    "DEFAULT_KEEP_ALIVE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "create_app",
    "serve",
    "server_config",
]

#: Default largest request body accepted by ``POST /predict`` (10 MiB).
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
#: Default largest image, in pixels (Pillow's ``MAX_IMAGE_PIXELS`` is set to it).
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
#: Seconds a client has to send a whole request body.
DEFAULT_BODY_TIMEOUT = 10.0
#: Seconds an idle keep-alive connection stays open (uvicorn's ``timeout_keep_alive``).
DEFAULT_KEEP_ALIVE = 5
#: Seconds a connection has to deliver a request's head (after opening, or after a response).
DEFAULT_HEAD_TIMEOUT = 10.0

_FLOAT32_MAX = 3.4028234663852886e38
_REPR = re.compile(r"<[^<>]{0,200}? at 0x[0-9a-fA-F]+>")
_log = logging.getLogger("mlbook.serve")


class _BadInput(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _clean(message: str, limit: int = 300) -> str:
    """One line, no object reprs (``<_io.BytesIO object at 0x...>``), bounded length."""
    text = " ".join(_REPR.sub("<object>", message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(exc: BaseException) -> str:
    return _clean(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


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
    return _clean(str(value))


def _all_finite(value: Any) -> bool:
    """No NaN or infinity anywhere in a JSON-ready value (walked without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _to_array(loaded: LoadedModel, inputs: Any) -> Any:
    """``inputs`` as a float32 tensor (PyTorch models) or a float64 array, checked:
    rectangular, numbers only, finite, within the dtype's range."""
    if not isinstance(inputs, list) or not inputs:
        raise _BadInput(422, "'inputs' must be a non-empty array of numbers (nested for batches)")
    import numpy

    shape = "'inputs' must be a rectangular array of numbers"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = numpy.asarray(inputs)
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        raise _BadInput(422, f"{shape} ({_describe(exc)})") from exc
    if array.dtype.kind not in "biuf":
        raise _BadInput(422, f"{shape} (found {_kind(array)})")
    array = array.astype(numpy.float64)
    if not bool(numpy.isfinite(array).all()):
        raise _BadInput(422, "'inputs' holds a number too large for a float64 (or not finite)")
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(loaded.model, torch.nn.Module):
        largest = float(numpy.abs(array).max()) if array.size else 0.0
        if largest > _FLOAT32_MAX:
            raise _BadInput(
                422,
                f"'inputs' holds {largest:.4g}, out of range for the model's float32 "
                f"(largest {_FLOAT32_MAX:.4g})",
            )
        return torch.from_numpy(array.astype(numpy.float32))
    return array


def _kind(array: Any) -> str:
    if array.dtype.kind == "O":
        return "rows of different lengths, or values that are not numbers"
    return {"U": "strings", "S": "strings", "c": "complex numbers"}.get(
        array.dtype.kind, f"values of type {array.dtype}"
    )


def _open_image(data: bytes, name: str, max_pixels: int) -> Any:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise _BadInput(501, "image input needs Pillow on the server: pip install Pillow") from exc

    too_large = f"{name}: the image has more than {max_pixels} pixels, the server's limit"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                raise _BadInput(
                    413, f"{too_large} ({image.width}x{image.height}); send a smaller image"
                )
            image.load()
    except _BadInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _BadInput(413, f"{too_large}; send a smaller image") from exc
    except UnidentifiedImageError as exc:
        raise _BadInput(422, f"{name}: not a readable image (no known image format)") from exc
    except Exception as exc:  # a malformed image can make any decoder fail
        raise _BadInput(422, f"{name}: not a readable image ({_describe(exc)})") from exc
    return image


def _decode_images(values: Any, max_pixels: int) -> list[Any]:
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
            raise _BadInput(422, f"images[{index}]: not valid base64 ({_describe(exc)})") from exc
        images.append(_open_image(data, f"images[{index}]", max_pixels))
    return images


def _parse_json(loaded: LoadedModel, body: bytes, max_pixels: int) -> Any:
    import orjson

    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _BadInput(400, f"the body is not valid JSON ({_clean(str(exc))})") from exc
    if not isinstance(payload, dict):
        raise _BadInput(422, 'expected a JSON object: {"inputs": [...]} or {"images": [...]}')
    keys = [k for k in ("inputs", "images", "image") if k in payload]
    if len(keys) != 1:
        raise _BadInput(
            422, 'expected exactly one of "inputs", "images" or "image" in the JSON object'
        )
    if keys[0] == "inputs":
        return _to_array(loaded, payload["inputs"])
    return _decode_images(payload[keys[0]], max_pixels)


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


def create_app(
    bundle: LoadedModel | Path | str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
) -> Any:
    """A FastAPI app serving ``bundle`` (a loaded model or a bundle path).

    Args:
        bundle: a :class:`~mlbook.deploy.loader.LoadedModel`, or a bundle directory
            loaded with :func:`mlbook.load`'s default trusted keys.
        max_bytes: largest request body (413 beyond).
        max_image_pixels: largest image (413 beyond); also set as Pillow's
            ``Image.MAX_IMAGE_PIXELS`` for this process.
        body_timeout: seconds to receive a whole request body (408 beyond).

    Raises:
        ExportError: FastAPI is missing, or the bundle does not load.
    """
    fastapi = _require_extra()
    import orjson
    from fastapi import Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect

    from mlbook.deploy.loader import LoadedModel, load

    loaded = bundle if isinstance(bundle, LoadedModel) else load(bundle)
    manifest = loaded.manifest
    try:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = max_image_pixels
    except ImportError:  # images are refused with a 501 then
        pass
    app = fastapi.FastAPI(
        title=f"mlbook {manifest.experiment}/{manifest.version}",
        description=manifest.title,
        docs_url=None,
        redoc_url=None,
    )

    def error(status: int, message: str, *, close: bool = False) -> Any:
        headers = {"connection": "close"} if close else None
        return JSONResponse({"error": _clean(message)}, status_code=status, headers=headers)

    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "experiment": manifest.experiment,
            "version": manifest.version,
            "run_id": manifest.run_id,
        }

    def metadata() -> Any:
        import msgspec

        body = {
            "manifest": msgspec.to_builtins(manifest),
            "labels": loaded.labels.to_dict() if loaded.labels is not None else None,
            "params": loaded.params.to_dict(),
        }
        return Response(orjson.dumps(body), media_type="application/json")

    too_big = f"the request body is larger than the limit of {max_bytes} bytes"

    async def read_body(request: Request) -> bytes | Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            return error(413, too_big, close=True)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_bytes:
                        return error(413, too_big, close=True)
                    chunks.append(chunk)
        except TimeoutError:
            return error(
                408, f"the request body did not arrive within {body_timeout:g} s", close=True
            )
        except ClientDisconnect:
            return error(400, "the client went away before sending the whole body", close=True)
        return b"".join(chunks)

    async def predict(request: Request) -> Any:
        body = await read_body(request)
        if not isinstance(body, bytes):
            return body
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if content_type == "multipart/form-data":
                inputs = await _parse_form(request, body, max_image_pixels)
            elif content_type in ("application/json", ""):
                inputs = _parse_json(loaded, body, max_image_pixels)
            else:
                raise _BadInput(
                    415,
                    f"unsupported content type {content_type[:100]!r}; send application/json "
                    "or multipart/form-data",
                )
        except _BadInput as exc:
            return error(exc.status, exc.message)
        try:
            outputs = await run_in_threadpool(loaded.predict, inputs)
        except ExportError as exc:
            return error(501, str(exc))
        except Exception as exc:  # the input reached the model, which could not use it
            _log.info("predict failed on a request's input", exc_info=True)
            return error(422, f"the model could not use this input: {_describe(exc)}")
        answer: dict[str, Any] = {"outputs": jsonable(outputs)}
        if not _all_finite(answer["outputs"]):
            return error(422, "the model's output for this input is not finite (NaN or infinity)")
        labels = _label_rows(loaded, outputs)
        if labels is not None:
            answer["labels"] = labels
        return Response(orjson.dumps(answer), media_type="application/json")

    predict.__annotations__ = {"request": Request}
    app.add_api_route("/health", health, methods=["GET"], response_model=None)
    app.add_api_route("/metadata", metadata, methods=["GET"], response_model=None)
    app.add_api_route("/predict", predict, methods=["POST"], response_model=None)
    return app


async def _parse_form(request: Any, body: bytes, max_pixels: int) -> list[Any]:
    from starlette.requests import Request

    replay = Request(request.scope, _replay(body))
    images = []
    try:
        form = await replay.form()
    except Exception as exc:
        raise _BadInput(400, f"the multipart form cannot be parsed ({_describe(exc)})") from exc
    try:
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                name = f"form field {key[:100]!r}"
                images.append(_open_image(await value.read(), name, max_pixels))
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


def server_config(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    keep_alive: int = DEFAULT_KEEP_ALIVE,
    head_timeout: float = DEFAULT_HEAD_TIMEOUT,
    log_level: str = "info",
) -> Any:
    """The ``uvicorn.Config`` :func:`serve` runs: loopback, keep-alive and head timeouts,
    bounded header size, no server header."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=_timed_protocol(head_timeout),
        timeout_keep_alive=keep_alive,
        h11_max_incomplete_event_size=64 * 1024,
        server_header=False,
    )


def _timed_protocol(head_timeout: float) -> type[Any]:
    """uvicorn's h11 protocol, plus a deadline for each request head.

    uvicorn's keep-alive timer restarts on every byte received, so a client that
    trickles its headers, or opens a connection and sends nothing, holds it
    forever. Here a connection is closed when no new request has started
    ``head_timeout`` seconds after it opened or after the last response.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_head_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_deadline()

        def _arm_head_deadline(self) -> None:
            cycle = self.cycle

            def expire() -> None:
                if self.cycle is cycle and not self.transport.is_closing():
                    self.transport.close()

            self.loop.call_later(head_timeout, expire)

    return TimedH11Protocol


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

    uvicorn.Server(server_config(app, host=host, port=port)).run()
