"""The prediction log: a sampled share of ``/predict`` requests and their answers,
kept in the artifact bucket for whoever watches what the service is asked.

A request is sampled at the rate of the version served (``[monitoring] log_rate`` of
the configuration it was trained under, recorded in its lineage) and handed to a
bounded queue; a thread of the worker's own empties the queue into objects, so a
request never waits for its logging, and never fails by it. When the queue is full
the record is dropped and counted (``dropped``), never waited for; a write that fails
is counted (``failed``) and logged, and the records it held are lost.

Each object is one batch of JSON lines, one per request:
``predictions/<model>/v<version>/<YYYY-MM-DD>/<HHMMSS>-<writer>-<n>.jsonl``, written
whole (no object is ever appended to). A line holds the time, the request id, the
status and either the instances (the model's feature vectors: each feature as the
model reads it, a category as its index in the version's category list, missing as
``null``) with the answer's predictions and, per feature, the number of values that
were categories the version does not know (missing in the instances); or, for a
refused request, its problem's type and number of errors. Never the body: no text a
client wrote is kept.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from multiprocessing import util
from typing import Any

import orjson

log = logging.getLogger("modelrail.serving")

PREFIX = "predictions/"
# Records held for the writer: a burst of this many requests is kept while the bucket
# is slow; beyond it requests go unlogged rather than wait.
QUEUE_RECORDS = 10_000
# A batch is written when it holds this many records, or this long after its first.
BATCH_RECORDS = 1_000
BATCH_SECONDS = 10.0
# How long a stopping worker waits for its last batch to be written.
CLOSE_SECONDS = 5.0

_STOP = object()


def prefix(model: str, version: int) -> str:
    """Where a version's log lies in the artifact bucket."""
    return f"{PREFIX}{model}/v{version}/"


class PredictionLog:
    """Sampled records of one served version, written by ``write(key, data)``."""

    def __init__(
        self,
        write: Callable[[str, bytes], None],
        *,
        model: str,
        version: int,
        rate: float,
        capacity: int = QUEUE_RECORDS,
        batch_records: int = BATCH_RECORDS,
        batch_seconds: float = BATCH_SECONDS,
    ) -> None:
        self.rate = rate
        self._write, self._prefix = write, prefix(model, version)
        self._capacity, self._batch_records = capacity, batch_records
        self._batch_seconds = batch_seconds
        self.logged = self.dropped = self.failed = 0
        self._pid: int | None = None  # the process whose writer thread runs
        self._queue: queue.Queue[Any] = queue.Queue(capacity)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._written = 0

    def sampled(self) -> bool:
        """Whether to log this request (drawn at ``rate``)."""
        return random.random() < self.rate

    def answered(
        self, request_id: str, matrix: Any, predictions: bytes, unseen: Mapping[str, int]
    ) -> None:
        """An answered request: its feature matrix, its predictions already encoded
        as JSON (the answer's own encoding), and its unseen categories per feature."""
        record = {
            "time": _now(),
            "request_id": request_id,
            "status": 200,
            "instances": matrix,
            "predictions": orjson.Fragment(predictions),
        }
        if unseen:
            record["unseen"] = dict(unseen)
        self._offer(record)

    def refused(self, request_id: str, status: int, problem: str, errors: int) -> None:
        """A refused request: its problem's type and number of errors, not its body."""
        self._offer(
            {
                "time": _now(),
                "request_id": request_id,
                "status": status,
                "problem": problem,
                "errors": errors,
            }
        )

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Write what is queued, within ``timeout``; later records start a new writer."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None or self._pid != os.getpid():
                return
            self._queue.put(_STOP)
        thread.join(timeout)

    def _offer(self, record: dict[str, Any]) -> None:
        if self._pid != os.getpid() or self._thread is None:
            self._start()
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def _start(self) -> None:
        """The writer of this process: a forked worker inherits the master's log, but
        neither its thread nor a usable queue."""
        with self._lock:
            if self._pid == os.getpid() and self._thread is not None:
                return
            if self._pid != os.getpid():
                self._queue = queue.Queue(self._capacity)
                self.logged = self.dropped = self.failed = 0
            self._pid = os.getpid()
            self._writer = f"{uuid.uuid4().hex[:12]}"
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()
            # Run at the process's end, a forked worker's included (atexit is not).
            util.Finalize(self, self.close, exitpriority=10)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.monotonic() + self._batch_seconds
            while len(batch) < self._batch_records:
                try:
                    record = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if record is _STOP:
                    stopping = True
                    break
                batch.append(record)
            self._flush(batch)

    def _flush(self, batch: list[dict[str, Any]]) -> None:
        now = datetime.now(UTC)
        self._written += 1
        key = f"{self._prefix}{now:%Y-%m-%d}/{now:%H%M%S}-{self._writer}-{self._written:06d}.jsonl"
        data = b"".join(
            orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)
            for record in batch
        )
        try:
            self._write(key, data)
        except Exception as exc:
            self.failed += len(batch)
            log.warning(
                f"prediction log: {len(batch)} record(s) not written to {key}: {exc}",
                extra={"fields": {"event": "prediction_log_failed", "records": len(batch)}},
            )
        else:
            self.logged += len(batch)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
