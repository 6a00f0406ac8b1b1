"""A production server built to misbehave, for the canary test: the real service
(``create_app``) under werkzeug's server on the supervisor's unix socket
(``MODELRAIL_BIND``). Pinned to ``MODELRAIL_TEST_FAULTY_VERSION``, it answers 500 to
every /predict whose body holds ``MARKER``; any other version answers as the service
does. On SIGTERM it stops accepting and ends once its requests in flight are answered,
as the real server drains. Run by the local supervisor as
``python -m tests.e2e.faulty_server`` when the settings name it
(``MODELRAIL_LOCAL_SERVER_MODULE``): embedded, or behind the emulator stack's control
plane, which then needs the checkout on its ``PYTHONPATH``."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from werkzeug.serving import make_server

from modelrail.serving.app import create_app

MARKER = b"123.456"
# What makes the local services run it (the settings' MODELRAIL_LOCAL_SERVER_MODULE),
# and the variable, inherited from the environment, naming the version that fails.
FAULTY_SERVER = "tests.e2e.faulty_server"
FAULTY_VERSION = "MODELRAIL_TEST_FAULTY_VERSION"
_DRAIN_DEADLINE_S = 8.0


def main() -> None:
    app = create_app()
    version = int(os.environ["MODELRAIL_MODEL_VERSION"])
    faulty = os.environ.get(FAULTY_VERSION) == str(version)
    inner = app.wsgi_app
    in_flight = [0]
    lock = threading.Lock()

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with lock:
            in_flight[0] += 1
        try:
            return list(answer(environ, start_response))
        finally:
            with lock:
                in_flight[0] -= 1

    def answer(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if faulty and environ.get("PATH_INFO") == "/predict":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            if MARKER in body:
                answer = orjson.dumps(
                    {
                        "title": "injected fault",
                        "model": {"name": os.environ["MODELRAIL_MODEL_NAME"], "version": version},
                    }
                )
                start_response(
                    "500 Internal Server Error",
                    [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))],
                )
                return [answer]
        return inner(environ, start_response)

    app.wsgi_app = wsgi  # type: ignore[method-assign]
    bind = os.environ["MODELRAIL_BIND"].removeprefix("unix:")
    server = make_server(f"unix://{bind}", 0, app, threaded=True)
    signal.signal(
        signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start()
    )
    server.serve_forever()
    deadline = time.monotonic() + _DRAIN_DEADLINE_S
    while in_flight[0] and time.monotonic() < deadline:
        time.sleep(0.01)


if __name__ == "__main__":
    main()
