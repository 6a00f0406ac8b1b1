"""The prediction log: a sampled share of ``/predict`` requests and their answers,
kept in the artifact bucket for whoever watches what the service is asked.

A request is sampled at the rate of the version served (``[monitoring] log_rate`` of
the configuration it was trained under, recorded in its lineage). The request thread
encodes a sampled request's line (a few microseconds) and appends it to a bounded
deque: no lock, no wake-up but once a batch is full. A thread of the worker's own
writes each full batch as one object, and what is left once ``BATCH_SECONDS`` passed
since its last write; it only joins and writes, so it takes the interpreter from the
requests for as little as it can (measured: encoding in the writer doubled the tail
of a service logging every request, ``docs/benchmarks.md``). A request never waits for
a write and never fails by one. When the deque is full the record is dropped and
counted (``dropped``); a write that fails is counted (``failed``) and logged, and the
records it held are lost.

What the lines hold, and where they lie: ``domain.predictions``. The writer itself is
``BatchWriter``, which the shadow mirror's comparisons go through too
(``serving.shadow``).
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from multiprocessing import util
from typing import Any

import orjson

from modelrail.domain import predictions

log = logging.getLogger("modelrail.serving")

# Records held for the writer: a burst of this many requests is kept while the bucket
# is slow; beyond it requests go unlogged rather than wait.
QUEUE_RECORDS = 10_000
# A batch is written when it holds this many records, or at the latest this long after
# the last write.
BATCH_RECORDS = 1_000
BATCH_SECONDS = 10.0
# How long a stopping worker waits for its last batch to be written.
CLOSE_SECONDS = 5.0

_LINE = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


class BatchWriter:
    """JSON lines written in batches under ``prefix`` by ``write(key, data)`` from a
    thread of the worker's own: the prediction log's, and the shadow comparison's
    (``serving.shadow``). ``offer`` holds an item (encoded at once by ``_encode``) or,
    when ``capacity`` are held, drops and counts it."""

    thread_name = "batch-writer"

    def __init__(
        self,
        write: Callable[[str, bytes], None],
        *,
        prefix: str,
        capacity: int = QUEUE_RECORDS,
        batch_records: int = BATCH_RECORDS,
        batch_seconds: float = BATCH_SECONDS,
    ) -> None:
        self._write, self._prefix = write, prefix
        self._capacity, self._batch_records = capacity, batch_records
        self._batch_seconds = batch_seconds
        self.logged = self.dropped = self.failed = 0
        self._pending: collections.deque[bytes] = collections.deque()  # JSON lines
        self._wake = threading.Event()
        self._stopping = False
        self._pid: int | None = None  # the process whose writer thread runs
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._writer, self._written = "", 0
        self._written_at = time.monotonic()  # of the last write (or of the start)

    def _encode(self, item: Any) -> bytes:
        """An item's line: by default the item is its line's object."""
        return orjson.dumps(item, option=_LINE)

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Write what is held, within ``timeout``; a later record starts a new writer."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None or self._pid != os.getpid():
                return
            self._stopping = True
        self._wake.set()
        thread.join(timeout)

    def offer(self, item: Any) -> None:
        if self._thread is None or self._pid != os.getpid():
            self._start()
        pending = self._pending
        if len(pending) >= self._capacity:
            self.dropped += 1
            return
        pending.append(self._encode(item))
        if len(pending) >= self._batch_records:
            self._wake.set()

    def _start(self) -> None:
        """The writer of this process: a forked worker inherits the master's log, but
        not its thread, and none of its records."""
        with self._lock:
            if self._pid == os.getpid() and self._thread is not None:
                return
            if self._pid != os.getpid():
                self._pending.clear()
                self.logged = self.dropped = self.failed = 0
            self._pid, self._stopping = os.getpid(), False
            # Names this process's objects (not uuid: its import costs a cold start 2 ms).
            self._writer = os.urandom(6).hex()
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()
            # Run at the process's end, a forked worker's included (atexit is not).
            util.Finalize(self, self.close, exitpriority=10)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._batch_seconds)
            self._wake.clear()
            stopping = self._stopping
            self._write_due(time.monotonic(), stopping)
            if stopping:
                return

    def _write_due(self, now: float, everything: bool) -> None:
        """Write the full batches held, and what else is held once a batch interval has
        passed since the last write (or ``everything``, as a worker stops). Writing all
        that is pending after each write would make a busy worker write an object per
        few requests, each costing the process about as much as a full batch."""
        pending = self._pending
        while pending and (
            everything
            or len(pending) >= self._batch_records
            or now - self._written_at >= self._batch_seconds
        ):
            count = min(len(pending), self._batch_records)
            self._flush([pending.popleft() for _ in range(count)])
            self._written_at = now

    def _flush(self, batch: list[bytes]) -> None:
        now = datetime.now(UTC)
        self._written += 1
        key = f"{self._prefix}{now:%Y-%m-%d}/{now:%H%M%S}-{self._writer}-{self._written:06d}.jsonl"
        try:
            self._write(key, b"".join(batch))
        except Exception as exc:  # logging never fails the service
            self.failed += len(batch)
            log.warning(
                f"{self.thread_name}: {len(batch)} record(s) not written to {key}: {exc}",
                extra={
                    "fields": {
                        "event": f"{self.thread_name.replace('-', '_')}_failed",
                        "records": len(batch),
                    }
                },
            )
        else:
            self.logged += len(batch)


class PredictionLog(BatchWriter):
    """Sampled records of one served version, written by ``write(key, data)``."""

    thread_name = "prediction-log"

    def __init__(
        self,
        write: Callable[[str, bytes], None],
        *,
        model: str,
        version: int,
        rate: float,
        service: str | None = None,
        capacity: int = QUEUE_RECORDS,
        batch_records: int = BATCH_RECORDS,
        batch_seconds: float = BATCH_SECONDS,
    ) -> None:
        super().__init__(
            write,
            prefix=predictions.prefix(model, version),
            capacity=capacity,
            batch_records=batch_records,
            batch_seconds=batch_seconds,
        )
        self.rate, self.service = rate, service

    def sampled(self) -> bool:
        """Whether to log this request (drawn at ``rate``)."""
        return random.random() < self.rate

    def answered(
        self, request_id: str, matrix: Any, predictions: Any, unseen: Mapping[str, int]
    ) -> None:
        """An answered request: its feature matrix, its predictions as answered, and
        its unseen categories per feature (encoded at once: nothing of it is held)."""
        self.offer((time.time(), request_id, 200, matrix, predictions, unseen))

    def refused(self, request_id: str, status: int, problem: str, errors: int) -> None:
        """A refused request: its problem's type and number of errors, not its body."""
        self.offer((time.time(), request_id, status, problem, errors))

    def _encode(self, item: Any) -> bytes:
        # Encoded on the request thread, a few microseconds: the writer thread then only
        # joins and writes, and takes the interpreter from the requests for as little
        # as it can.
        return orjson.dumps(predictions.record(item, self.service), option=_LINE)
