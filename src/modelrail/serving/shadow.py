"""The shadow mirror: the production service sends a sampled share of its ``/predict``
requests to the candidate (staging, ``MODELRAIL_SHADOW_URL``) and records how the two
answers compare, off the request path.

The request thread, once production answered, puts the raw body, its content type,
production's answers and latency in a bounded queue (``queue.Queue.put_nowait``: a few
microseconds); a full queue drops the request and counts it (``dropped``). A sender
thread of the worker's own posts each body to the candidate (``SEND_TIMEOUT_S`` at
most, an ID token for an ``https`` URL: Cloud Run's invoker check), compares the
answers (``domain.shadow.compare``) and hands the line to a ``BatchWriter`` (the
prediction log's writer) under ``shadow/<model>/v<production>/``. A candidate that is
down, slow or wrong costs a line with its ``error``, never a production answer.

The rate is ``[production] shadow_rate`` of the model's configuration when
``[production] shadow`` is on, else 0: the sender reads it as it starts, and every
``CONFIG_SECONDS``, so the service's cold start does not parse the configuration and a
change takes effect without a new revision. Until then nothing is mirrored. The sender
imports what it needs (urllib3, google-auth) in its thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing import util
from typing import Any

from modelrail.domain import predictions, shadow
from modelrail.serving.prediction_log import BATCH_SECONDS, CLOSE_SECONDS, BatchWriter

log = logging.getLogger("modelrail.serving")

# Requests held for the sender: beyond, a request is dropped (counted), not mirrored.
QUEUE_REQUESTS = 1_000
# How long the candidate has to answer a mirrored request.
SEND_TIMEOUT_S = 10.0
# How often the sender re-reads the rate from the configuration.
CONFIG_SECONDS = 60.0
# An ID token is fetched again after this long (Google's last an hour).
TOKEN_SECONDS = 45 * 60.0
_ERROR_CHARS = 200


class ShadowMirror:
    """Mirrors sampled requests of ``model`` v``version`` to ``url``; the rate comes
    from ``read_rate()`` (re-read every ``CONFIG_SECONDS``), the lines go to ``write``."""

    def __init__(
        self,
        url: str,
        write: Callable[[str, bytes], None],
        read_rate: Callable[[], float],
        *,
        model: str,
        version: int,
        capacity: int = QUEUE_REQUESTS,
        timeout_s: float = SEND_TIMEOUT_S,
        batch_seconds: float = BATCH_SECONDS,
    ) -> None:
        self.url = url.rstrip("/")
        self.version = version
        self.rate = 0.0
        self.dropped = 0
        self._read_rate = read_rate
        self._timeout_s = timeout_s
        self._capacity = capacity
        self.writer = BatchWriter(
            write, prefix=shadow.prefix(model, version), batch_seconds=batch_seconds
        )
        self.writer.thread_name = "shadow-log"
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(capacity)
        self._pid: int | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._reported = 0  # of ``dropped``, counted in a line already
        self._candidate: int | None = None  # the version the candidate last named
        self._token: tuple[str, float] | None = None

    def sampled(self) -> bool:
        """Whether to mirror this request (drawn at ``rate``); starts this process's
        sender, which sets the rate."""
        if self._pid != os.getpid():
            self._start()
        rate = self.rate
        return rate > 0 and random.random() < rate

    def mirror(
        self, request_id: str, body: bytes, content_type: str, answers: Any, production_s: float
    ) -> None:
        """Hold a request production answered (``answers``, in ``production_s``) for the
        sender; drop and count it when ``capacity`` are held."""
        try:
            self._queue.put_nowait(
                (time.time(), request_id, body, content_type, answers, production_s)
            )
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Stop the sender once the held requests are sent (within ``timeout``), then
        write the lines held."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None or self._pid != os.getpid():
                return
        # Within the timeout too: a sender that died leaves the queue full for good.
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        thread.join(timeout)
        self.writer.close(timeout)

    def _start(self) -> None:
        """The sender of this process: a forked worker inherits the master's mirror,
        not its thread."""
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._queue = queue.Queue(self._capacity)
            self.dropped = self._reported = 0
            self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
            self._thread.start()
            util.Finalize(self, self.close, exitpriority=10)

    def _run(self) -> None:
        import urllib3

        pool = urllib3.PoolManager(maxsize=1, retries=False)
        read_at = -CONFIG_SECONDS
        while True:
            now = time.monotonic()
            if now - read_at >= CONFIG_SECONDS:
                self.rate, read_at = self._rate(), now
            try:
                item = self._queue.get(timeout=CONFIG_SECONDS)
            except queue.Empty:
                continue
            if item is None:
                return
            self.writer.offer(self._compared(pool, *item))

    def _rate(self) -> float:
        try:
            return self._read_rate()
        except Exception as exc:  # the mirror never fails the service
            log.warning(
                f"shadow: the mirror's rate could not be read, nothing is mirrored: {exc}",
                extra={"fields": {"event": "shadow_config_failed"}},
            )
            return 0.0

    def _compared(
        self,
        pool: Any,
        at: float,
        request_id: str,
        body: bytes,
        content_type: str,
        answers: Any,
        production_s: float,
    ) -> dict[str, Any]:
        """The line of one mirrored request: the candidate's answer compared with
        production's, or why it could not be."""
        import msgspec
        import orjson

        line: dict[str, Any] = {
            "time": predictions.timestamp(datetime.fromtimestamp(at, UTC)),
            "request_id": request_id,
            "production": self.version,
            "candidate": self._candidate,
            "rows": len(answers),
            "production_ms": round(production_s * 1000, 3),
            "status": 0,
        }
        dropped, self._reported = self.dropped - self._reported, self.dropped
        if dropped:
            line["dropped"] = dropped
        started = time.perf_counter()
        try:
            response = pool.request(
                "POST",
                f"{self.url}/predict",
                body=body,
                headers={"Content-Type": content_type, "X-Request-Id": request_id, **self._auth()},
                timeout=self._timeout_s,
            )
            line["candidate_ms"] = round((time.perf_counter() - started) * 1000, 3)
            line["status"] = response.status
            if response.status != 200:
                raise ValueError(f"the candidate answered {response.status}")
            answer = orjson.loads(response.data)
            self._candidate = line["candidate"] = int(answer["model"]["version"])
            line.update(shadow.compare(msgspec.to_builtins(answers), answer["predictions"]))
        except Exception as exc:  # a failing candidate is a record, never a failure
            line["error"] = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
        return line

    def _auth(self) -> dict[str, str]:
        """An ID token for the candidate's URL (Cloud Run), none for plain http."""
        if not self.url.startswith("https://"):
            return {}
        now = time.monotonic()
        if self._token is None or now - self._token[1] > TOKEN_SECONDS:
            from google.auth.transport.requests import Request
            from google.oauth2 import id_token

            fetched = id_token.fetch_id_token(Request(), self.url)  # type: ignore[no-untyped-call]
            self._token = (fetched, now)
        return {"Authorization": f"Bearer {self._token[0]}"}
