"""``mlbook serve``: a real uvicorn server on a free loopback port, called over HTTP."""

from __future__ import annotations

import base64
import io
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from test_deploy_bundle import make_project  # noqa: E402

from mlbook.deploy import export_run  # noqa: E402
from mlbook.deploy.serve import create_app  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = make_project(tmp_path_factory.mktemp("serve") / "proj")
    return export_run(project, "E001", "small").path


@pytest.fixture(scope="module")
def server(bundle: Path) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        create_app(bundle, max_bytes=4096), host="127.0.0.1", port=port, log_level="warning"
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not instance.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(10)


def png(value: int) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8), value).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_health_and_metadata(server: str) -> None:
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["experiment"] == "E001"
    meta = httpx.get(f"{server}/metadata").json()
    assert meta["params"]["width"] == 4
    assert meta["labels"]["d0"] == 0
    assert meta["manifest"]["entry_point"] == "code/E001_tiny_cnn.py"


def test_predict_json(server: str) -> None:
    response = httpx.post(f"{server}/predict", json={"inputs": [[[[1.0] * 8] * 8]] * 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["outputs"]) == 2 and len(body["outputs"][0]) == 10
    assert abs(sum(body["outputs"][0]) - 1.0) < 1e-5
    assert len(body["labels"]) == 2 and body["labels"][0].startswith("d")


def test_predict_base64_image_and_multipart(server: str) -> None:
    response = httpx.post(f"{server}/predict", json={"images": [png(200), png(10)]})
    assert response.status_code == 200, response.text
    assert len(response.json()["outputs"]) == 2
    raw = base64.b64decode(png(120))
    response = httpx.post(f"{server}/predict", files={"file": ("a.png", raw, "image/png")})
    assert response.status_code == 200, response.text
    assert len(response.json()["labels"]) == 1


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        (
            {"content": b"{nope", "headers": {"content-type": "application/json"}},
            400,
            "not valid JSON",
        ),
        ({"json": [1, 2]}, 422, "expected a JSON object"),
        ({"json": {"x": 1}}, 422, 'exactly one of "inputs"'),
        ({"json": {"inputs": [[1, 2], [3]]}}, 422, "rectangular array of numbers"),
        ({"json": {"inputs": []}}, 422, "non-empty array"),
        ({"json": {"inputs": [1.0, 2.0]}}, 422, "the model could not use this input"),
        ({"json": {"images": ["%%%"]}}, 422, "images[0]: not valid base64"),
        (
            {"json": {"images": [base64.b64encode(b"not a png").decode()]}},
            422,
            "not a readable image",
        ),
        (
            {"content": b"x" * 5000, "headers": {"content-type": "application/json"}},
            413,
            "larger than the limit of 4096 bytes",
        ),
        (
            {"content": b"a,b", "headers": {"content-type": "text/csv"}},
            415,
            "unsupported content type",
        ),
        ({"files": {"field": (None, "text only")}}, 422, "has no file"),
    ],
)
def test_malformed_input_gets_a_clear_4xx(server: str, kwargs, status: int, message: str) -> None:  # type: ignore[no-untyped-def]
    response = httpx.post(f"{server}/predict", **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_streamed_body_over_the_limit_is_refused(server: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"[" * 1000

    response = httpx.post(
        f"{server}/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_mlbook_serve_cli_answers_a_real_prediction(bundle: Path, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlbook", "serve", str(bundle), "--port", str(port)],
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "mlbook serve did not start"
            time.sleep(0.1)
        response = httpx.post(
            f"http://127.0.0.1:{port}/predict", json={"inputs": [[[[0.5] * 8] * 8]]}
        )
        assert response.status_code == 200
        assert response.json()["labels"][0].startswith("d")
    finally:
        process.terminate()
        process.wait(10)


def test_serve_of_a_tampered_bundle_fails_with_one_line(bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    (copy / "params.json").write_text("{}")
    done = subprocess.run(
        [sys.executable, "-m", "mlbook", "serve", str(copy), "--port", str(free_port())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "params.json was changed" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers()
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(
    payload=st.one_of(
        json_values,
        st.fixed_dictionaries({"inputs": json_values}),
        st.fixed_dictionaries({"images": json_values}),
    )
)
def test_any_json_gets_an_answer_or_a_clear_4xx(server: str, payload: object) -> None:
    response = httpx.post(f"{server}/predict", json=payload)
    assert response.status_code in (200, 400, 413, 422), response.text
    body = response.json()
    assert ("outputs" in body) if response.status_code == 200 else body["error"]


def test_numbers_out_of_range_are_a_4xx(server: str) -> None:
    response = httpx.post(
        f"{server}/predict",
        content=b'{"inputs": [1e400, 10000000000000000000000000]}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code in (400, 422)
    response = httpx.post(f"{server}/predict", json={"inputs": [10**30]})
    assert response.status_code == 422
    response = httpx.post(f"{server}/predict", json={"inputs": [[10**30, "x"]]})
    assert response.status_code == 422
    assert "rectangular array of numbers" in response.json()["error"]
