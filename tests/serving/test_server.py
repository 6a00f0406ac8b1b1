"""The service's server process: start-up, ports, heavy imports, SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import urllib3

from tests.conftest import STATE_DEADLINE_S, wait_for

from .conftest import MODEL, ROOT, RegisteredModels, Server, post_json


def ready(server: Server) -> bool:
    try:
        return (
            urllib3.request("GET", server.url + "/readyz", timeout=1, retries=False).status == 200
        )
    except urllib3.exceptions.HTTPError:
        return False


def test_server_serves_the_pinned_version(
    start_server: Callable[..., Server], models: RegisteredModels
) -> None:
    server = start_server(2)
    wait_for(lambda: ready(server), "the server to be ready")
    status, body = post_json(server.url + "/predict", {"instances": models.records[:3]})
    assert status == 200
    assert body["model"] == {"name": MODEL, "version": 2}
    # The Flask routes (built on first use by the server's entry point).
    metadata = urllib3.request("GET", f"{server.url}/v1/models/{MODEL}", retries=False)
    assert metadata.status == 200
    assert orjson.loads(metadata.data)["version"] == 2
    document = urllib3.request("GET", server.url + "/openapi.json", retries=False)
    assert orjson.loads(document.data)["openapi"].startswith("3.1")
    missing = urllib3.request("GET", server.url + "/nowhere", retries=False)
    assert missing.status == 404
    assert missing.headers["Content-Type"] == "application/problem+json"
    wrong = urllib3.request("POST", server.url + "/healthz", retries=False)
    assert (wrong.status, wrong.headers["Allow"]) == (405, "GET")


def test_vertex_port_and_routes(
    start_server: Callable[..., Server], models: RegisteredModels
) -> None:
    from .conftest import free_port

    port = free_port()
    server = start_server(
        1,
        AIP_HTTP_PORT=str(port),
        AIP_HEALTH_ROUTE="/health",
        AIP_PREDICT_ROUTE="/v1/endpoints/e/deployedModels/d:predict",
    )
    server.url = f"http://127.0.0.1:{port}"
    wait_for(lambda: ready(server), "the server to be ready")
    assert urllib3.request("GET", server.url + "/health", retries=False).status == 200
    status, body = post_json(
        server.url + "/v1/endpoints/e/deployedModels/d:predict", {"instances": models.records[:2]}
    )
    assert status == 200
    assert len(body["predictions"]) == 2


def test_tampered_only_version_stays_not_ready(
    start_server: Callable[..., Server], models: RegisteredModels
) -> None:
    server = start_server(models.tampered, K_SERVICE="modelrail-staging")  # Cloud Run's format
    wait_for(
        lambda: (
            urllib3.request("GET", server.url + "/healthz", timeout=1, retries=False).status == 200
            if _listening(server)
            else False
        ),
        "the server to be live",
    )
    readyz = urllib3.request("GET", server.url + "/readyz", retries=False)
    assert readyz.status == 503
    assert "sha256" in orjson.loads(readyz.data)["detail"]
    status, body = post_json(server.url + "/predict", {"instances": models.records[:1]})
    assert status == 503
    assert body["type"].endswith("not-ready")
    lines = [
        orjson.loads(line) for line in server.log.read_bytes().splitlines() if line.startswith(b"{")
    ]
    refused = [line for line in lines if line.get("event") == "model_refused"]
    assert refused
    assert refused[0]["severity"] == "ERROR"
    assert "does not match the sha256" in refused[0]["message"]


@pytest.mark.fault
def test_a_required_version_whose_manifest_was_rewritten_ends_the_process(
    start_server: Callable[..., Server], models: RegisteredModels
) -> None:
    # As the local deployer starts a candidate: a version that cannot load never answers.
    server = start_server(models.forged, MODELRAIL_REQUIRE_MODEL="1")

    assert server.process.wait(timeout=60) != 0
    log = server.log.read_text()
    assert f"model penguins v{models.forged} refused" in log
    assert "manifest.json does not match its signature" in log


def _listening(server: Server) -> bool:
    try:
        urllib3.request("GET", server.url + "/healthz", timeout=1, retries=False)
        return True
    except urllib3.exceptions.HTTPError:
        return False


def test_sigterm_lets_in_flight_requests_finish(
    start_server: Callable[..., Server], models: RegisteredModels
) -> None:
    # One worker: the slow request's body is awaited, so the probe is still answered.
    server = start_server(1, MODELRAIL_WORKERS="1")
    wait_for(lambda: ready(server), "the server to be ready")
    # A slow client: headers and half the body now, the rest after SIGTERM.
    import socket

    body = orjson.dumps({"instances": models.records[:5]})
    host, port = server.url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)))
    connection.sendall(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10]
    )
    wait_for(lambda: _worker_busy(server), "the worker to read the request")
    os.kill(server.process.pid, signal.SIGTERM)  # the master, as Cloud Run signals PID 1
    connection.sendall(body[10:])
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        chunk = connection.recv(65536)
        if not chunk:
            break
        answer += chunk
    connection.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert server.process.wait(timeout=STATE_DEADLINE_S) == 0


def _worker_busy(server: Server) -> bool:
    # The worker has the request once the master's listener no longer has it queued;
    # the server gives no signal, so give the worker the chance by a readiness probe.
    return ready(server)


def test_service_process_never_imports_heavy_libraries(
    models: RegisteredModels, tmp_path: Any
) -> None:
    from .conftest import link_buckets, service_env

    home = tmp_path / "home"
    link_buckets(models, home)
    script = (
        "import sys\n"
        "from modelrail.serving import importguard\n"
        "importguard.install()\n"
        "from modelrail.serving.app import create_app\n"
        "client = create_app().test_client()\n"
        f"r = client.post('/predict', json={{'instances': {models.records[:3]!r}}})\n"
        "assert r.status_code == 200, r.data\n"
        # yaml too: the event graph is the pipeline's, and reading it cost each cold
        # start ~25 ms.
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pandas', 'sklearn', 'scipy', 'lightgbm', 'pyarrow', 'matplotlib', 'yaml'))\n"
        "print('HEAVY', heavy, importguard.loaded_heavy_modules())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script.replace("None", "None")],
        env=service_env(models, home, MODELRAIL_MODEL_VERSION="1"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY [] []" in result.stdout


def test_concurrent_requests_on_threads(
    start_server: Callable[..., Server], models: RegisteredModels
) -> None:
    server = start_server(1)
    wait_for(lambda: ready(server), "the server to be ready")
    failures: list[Any] = []

    def hammer() -> None:
        for start in range(0, 40):
            status, body = post_json(
                server.url + "/predict", {"instances": models.records[start : start + 3]}
            )
            if status != 200 or len(body["predictions"]) != 3:
                failures.append((status, body))

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def _chunked_post(server: Server, data: bytes) -> bytes:
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    request = [
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
        b"application/json\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
    ]
    for start in range(0, len(data), 1000):
        chunk = data[start : start + 1000]
        request.append(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    request.append(b"0\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        # One send: a server that answers 413 once it has read past the limit may
        # close before a later send, which would then fail; its answer still comes.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(b"".join(request))
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_chunked_body_without_length_is_bounded(
    start_server: Callable[..., Server], models: RegisteredModels
) -> None:
    server = start_server(1, MODELRAIL_MAX_BODY_BYTES="4096")
    wait_for(lambda: ready(server), "the server to be ready")
    large = _chunked_post(server, orjson.dumps({"instances": models.records[:40]}))
    assert large.startswith(b"HTTP/1.1 413"), large[:300]
    assert b"application/problem+json" in large
    assert b"payload-too-large" in large
    small = _chunked_post(server, orjson.dumps({"instances": models.records[:2]}))
    assert small.startswith(b"HTTP/1.1 200"), small[:300]


@pytest.mark.fault
def test_clients_that_stop_sending_their_body_do_not_block_the_service(
    start_server: Callable[..., Server], models: RegisteredModels
) -> None:
    import socket

    server = start_server(1, MODELRAIL_WORKERS="1", MODELRAIL_REQUEST_TIMEOUT_S="2")
    wait_for(lambda: ready(server), "the server to be ready")
    host, port = server.url.removeprefix("http://").split(":")
    slow = []
    for _ in range(2):
        connection = socket.create_connection((host, int(port)), timeout=STATE_DEADLINE_S)
        connection.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"instances": ['
        )
        slow.append(connection)
    for start in range(5):  # answered while both bodies are awaited
        status, body = post_json(
            server.url + "/predict", {"instances": models.records[start : start + 1]}
        )
        assert (status, len(body["predictions"])) == (200, 1)
    for connection in slow:
        answer = connection.recv(65536)
        connection.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"request-timeout" in answer


@pytest.mark.fault
def test_a_body_that_trickles_in_past_the_deadline_is_answered_408(
    start_server: Callable[..., Server],
) -> None:
    """The deadline is the request's, not each chunk's: a client sending a chunk now and
    then, each well within the timeout, is still cut off."""
    import select
    import socket

    server = start_server(1, MODELRAIL_WORKERS="1", MODELRAIL_REQUEST_TIMEOUT_S="2")
    wait_for(lambda: ready(server), "the server to be ready")
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=STATE_DEADLINE_S) as connection:
        connection.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"1\r\n{\r\n"
        )
        give_up = time.monotonic() + STATE_DEADLINE_S
        answer = b""
        while not answer and time.monotonic() < give_up:
            readable, _, _ = select.select([connection], [], [], 0.5)
            if readable:
                answer = connection.recv(65536)
            else:
                connection.sendall(b"1\r\n \r\n")  # one more byte of whitespace
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request-timeout" in answer


def test_a_body_cut_short_is_answered_400_naming_how_much_arrived(
    start_server: Callable[..., Server],
) -> None:
    """Through the real server: the client announces 100 bytes, sends 13 and stops
    sending (half-close); the 400 says 13 arrived, not 0."""
    import socket

    server = start_server(1, MODELRAIL_WORKERS="1")
    wait_for(lambda: ready(server), "the server to be ready")
    host, port = server.url.removeprefix("http://").split(":")
    sent = b'{"instances":'
    with socket.create_connection((host, int(port)), timeout=STATE_DEADLINE_S) as connection:
        connection.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + sent
        )
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk

    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert f"ended after {len(sent)} of the 100 bytes".encode() in answer, answer
