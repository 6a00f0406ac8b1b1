"""The notifier's adapters over HTTP, against servers of the test's own on 127.0.0.1:
webhook posts (an answer, a hang bounded by the timeout, a closed port) and Secret
Manager's ``:access`` call (the payload, a missing secret, an unavailable service)."""

from __future__ import annotations

import base64
import http.server
import socket
import threading
from collections.abc import Iterator

import orjson
import pytest

from modelrail.adapters.google.secrets import SecretManagerSecrets
from modelrail.adapters.webhooks import HttpWebhooks
from modelrail.kernel.errors import SecretUnavailable, TransientError

SECRET = "projects/p/secrets/team-webhook/versions/latest"
URL = "https://hooks.example.com/services/T0/B0/secret"


class Server:
    """Answers POST /status/<code> with that code (after ``release`` is set, for
    /hang), and GET /v1/<secret>:access as Secret Manager does for SECRET, 404 for any
    other, 503 for a secret named ``down``. Keeps every body posted."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                server.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/hang":
                    server.release.wait()
                    self._answer(200, b"")
                else:
                    self._answer(int(self.path.rsplit("/", 1)[1]), b"")

            def do_GET(self) -> None:
                if self.path == f"/v1/{SECRET}:access":
                    data = base64.b64encode(URL.encode() + b"\n").decode()
                    self._answer(200, orjson.dumps({"name": SECRET, "payload": {"data": data}}))
                elif "/down/" in self.path:
                    self._answer(503, b'{"error": {"message": "unavailable"}}')
                else:
                    self._answer(404, b'{"error": {"message": "not found"}}')

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join()


@pytest.mark.parametrize("status", [200, 204, 404, 500])
def test_a_post_returns_the_webhook_s_status_with_the_body_sent(
    server: Server, status: int
) -> None:
    assert HttpWebhooks().post(f"{server.url}/status/{status}", b'{"text": "hi"}') == status
    assert server.bodies == [b'{"text": "hi"}']


def test_a_webhook_that_hangs_is_given_up_at_the_timeout(server: Server) -> None:
    with pytest.raises(TimeoutError, match=r"no answer within 0\.5 s"):
        HttpWebhooks(timeout_s=0.5).post(f"{server.url}/hang", b"{}")


def test_a_webhook_nobody_listens_on_is_a_connection_error_that_hides_the_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port once the probe is closed.
    with pytest.raises(ConnectionError) as failed:
        HttpWebhooks().post(f"http://127.0.0.1:{port}/secret-path", b"{}")
    assert "secret-path" not in str(failed.value)


def test_secret_manager_gives_the_version_s_payload(server: Server) -> None:
    assert SecretManagerSecrets(server.url).reveal(SECRET, "IGNORED") == URL


def test_a_secret_that_is_missing_or_not_named_is_permanent(server: Server) -> None:
    secrets = SecretManagerSecrets(server.url)
    with pytest.raises(SecretUnavailable, match="HTTP 404"):
        secrets.reveal("projects/p/secrets/other/versions/1", None)
    with pytest.raises(SecretUnavailable, match="names no url_secret"):
        secrets.reveal(None, "MODELRAIL_WEBHOOK_TEAM")


def test_secret_manager_unavailable_is_transient(server: Server) -> None:
    with pytest.raises(TransientError, match="HTTP 503"):
        SecretManagerSecrets(server.url).reveal("projects/p/secrets/down/versions/1", None)
