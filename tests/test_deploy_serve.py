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
from mlbook.deploy.serve import create_app, server_config  # noqa: E402

pytestmark = pytest.mark.slow  # trains models or exports bundles: the full run has them


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = make_project(tmp_path_factory.mktemp("serve") / "proj")
    return export_run(project, "E001", "small").path


#: the test server's timeouts (seconds): short, so the tests that wait for them are quick
TIMEOUT = 2


@pytest.fixture(scope="module")
def server(bundle: Path) -> Iterator[str]:
    port = free_port()
    app = create_app(bundle, max_bytes=4096, body_timeout=TIMEOUT)
    config = server_config(
        app, port=port, keep_alive=TIMEOUT, head_timeout=TIMEOUT, log_level="warning"
    )
    assert config.host == "127.0.0.1"  # loopback unless told otherwise
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
    import os
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    (copy / "params.json").write_text("{}")
    public = bundle.parents[2] / ".mlbook" / "keys" / "signing.pub"
    done = subprocess.run(
        [sys.executable, "-m", "mlbook", "serve", str(copy), "--port", str(free_port())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "MLBOOK_TRUSTED_KEYS": str(public)},
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


# -- hardening: out-of-range numbers, bombs, reprs, keep-alive, timeouts, fuzzing -------------


@pytest.fixture(scope="module")
def client(bundle: Path) -> Iterator[object]:
    """The app in process (Starlette's TestClient): server errors raise in the test."""
    import warnings

    with warnings.catch_warnings():  # starlette >= 1.10 prefers httpx2; httpx still works
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from starlette.testclient import TestClient

    with TestClient(create_app(bundle, max_bytes=1 << 20)) as test_client:
        yield test_client


def image_bytes(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([1e300], "out of range for the model's float32"),
        ([[[[3.5e38] * 8] * 8]], "out of range for the model's float32"),
        ([[1, None]], "rectangular array of numbers"),
        ([["1.5"]], "rectangular array of numbers (found strings)"),
        ([{"a": 1}], "rectangular array of numbers"),
    ],
)
def test_out_of_range_or_odd_numbers_are_a_422(client, inputs, message: str) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/predict", json={"inputs": inputs})
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]


def test_outputs_that_are_not_finite_are_a_422(client) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/predict", json={"inputs": [[[[3e38] * 8] * 8]]})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == (
        "the model's output for this input is not finite (NaN or infinity)"
    )


def test_decompression_bomb_is_a_413(client) -> None:  # type: ignore[no-untyped-def]
    bomb = image_bytes(15000, 15000)
    assert len(bomb) < 40_000  # a small body ...
    response = client.post("/predict", json={"image": base64.b64encode(bomb).decode()})
    assert response.status_code == 413, response.text  # ... for 225 million pixels
    assert "more than 40000000 pixels" in response.json()["error"]
    response = client.post("/predict", files={"file": ("bomb.png", bomb, "image/png")})
    assert response.status_code == 413, response.text
    # between Pillow's limit and twice it, Pillow only warns: still refused
    response = client.post(
        "/predict", json={"image": base64.b64encode(image_bytes(7000, 7000)).decode()}
    )
    assert response.status_code == 413, response.text
    assert "more than 40000000 pixels" in response.json()["error"]


def test_errors_never_echo_object_reprs(client) -> None:  # type: ignore[no-untyped-def]
    for body in (
        {"image": base64.b64encode(b"not a png").decode()},
        {"image": base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40).decode()},
    ):
        response = client.post("/predict", json=body)
        assert response.status_code == 422
        error = response.json()["error"]
        assert "not a readable image" in error
        assert " at 0x" not in error and "<_io" not in error


def test_the_connection_stays_usable_after_an_error(server: str) -> None:
    with httpx.Client() as session:
        ports = []
        for payload, status in [
            ({"inputs": [1e300]}, 422),
            ({"inputs": [[[[1.0] * 8] * 8]]}, 200),
            ({"image": "%%%"}, 422),
            ({"inputs": [[[[0.5] * 8] * 8]]}, 200),
        ]:
            response = session.post(f"{server}/predict", json=payload)
            assert response.status_code == status, response.text
            stream = response.extensions["network_stream"]
            ports.append(stream.get_extra_info("client_addr")[1])
        assert len(set(ports)) == 1  # one keep-alive connection served all four


def raw_connection(server: str) -> socket.socket:
    host, port = server.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)))
    connection.settimeout(15 + 3 * TIMEOUT)  # far beyond the server's bounds
    return connection


def read_until_closed(connection: socket.socket) -> bytes:
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def test_a_body_that_never_finishes_is_dropped(server: str) -> None:
    with raw_connection(server) as connection:
        connection.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"inputs": ['
        )
        answer = read_until_closed(connection)  # the server answers, then closes
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"did not arrive within 2 s" in answer and b"connection: close" in answer.lower()


def test_silent_and_idle_connections_are_closed(server: str) -> None:
    with raw_connection(server) as connection:
        assert read_until_closed(connection) == b""  # sent nothing: dropped
    with raw_connection(server) as connection:
        connection.sendall(b"GET /hea")  # a request head that never completes
        assert read_until_closed(connection) == b""
    with raw_connection(server) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_until_closed(connection)  # answered, then idle past keep-alive
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"status":"ok"' in answer


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "99999"], "Invalid value for '--port': 99999 is not in the range 1<=x<=65535."),
        (["--port", "0"], "Invalid value for '--port': 0 is not in the range 1<=x<=65535."),
        (["--max-mb", "-5"], "Invalid value for '--max-mb': -5.0 is not in the range 0<x<=1024."),
        (["--max-mb", "nan"], "Invalid value for '--max-mb': nan is not a finite number"),
    ],
)
def test_serve_options_out_of_range_are_one_error_line(
    bundle: Path, args: list[str], message: str
) -> None:
    from click.testing import CliRunner

    from mlbook.cli import cli

    result = CliRunner().invoke(cli, ["serve", str(bundle), *args])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if "rror" in line]
    assert errors == [f"Error: {message}"]
    assert "Traceback" not in result.output


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: __import__("json").dumps(value).encode()),
    st.fixed_dictionaries({"inputs": json_values}).map(
        lambda value: __import__("json").dumps(value).encode()
    ),
    st.lists(
        st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70),
        min_size=1,
        max_size=8,
    ).map(lambda row: __import__("json").dumps({"inputs": [row]}).encode()),
    st.sampled_from(
        [
            b'{"inputs": ' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}",
            b'{"inputs": ' + b"[" * 2000 + b"]" * 2000 + b"}",
            b'{"inputs": [[[[' + b",".join([b"1e38"] * 8) + b"]]]]}",
            b'{"images": [""]}',
            b'{"image": "data:,"}',
            b'{"inputs": [1e400]}',
            b'{"inputs": [NaN]}',
        ]
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    body=bodies,
    content_type=st.sampled_from(
        ["application/json", "", "multipart/form-data; boundary=x", "text/plain"]
    ),
)
def test_any_body_gets_200_or_4xx_never_500(client, body: bytes, content_type: str) -> None:  # type: ignore[no-untyped-def]
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/predict", content=body, headers=headers)
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
    payload = response.json()
    assert ("outputs" in payload) if response.status_code == 200 else payload["error"]
