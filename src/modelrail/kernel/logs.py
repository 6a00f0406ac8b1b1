"""One logging setup for every entry point: the functions, the training job, the staging
service and the CLI.

On Google Cloud each record is one JSON object per line on stderr, which Cloud Logging
reads as a structured entry: ``severity``, ``message`` and ``time`` are its special
fields (the entry's severity, summary line and timestamp), ``logging.googleapis.com/trace``
and ``.../spanId`` group a request's lines under its trace, everything else lands in
``jsonPayload``. Cloud Run services and Cloud Run functions set ``K_SERVICE``, Cloud Run
jobs set ``CLOUD_RUN_JOB``; anywhere else the same records are readable text.

While a pipeline stage runs (``pipeline_context``), every line carries the ``stage`` and,
once it is known, the ``run_id``: plain top-level members, queried in Cloud Logging as
``jsonPayload.run_id``. (The ``logging.googleapis.com/labels`` special field would move
them to the entry's labels, but not every runtime honours it; a plain member always
arrives.)
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import orjson

# The platform variables that say "Cloud Logging reads this process's output".
GOOGLE_CLOUD_MARKERS = (
    "K_SERVICE",  # Cloud Run services, Cloud Run functions (gen2)
    "CLOUD_RUN_JOB",  # Cloud Run jobs
)
ROOT_LOGGER = "modelrail"

_TRACE_KEY = "logging.googleapis.com/trace"
_SPAN_KEY = "logging.googleapis.com/spanId"
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d+))?")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")

_pipeline: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "modelrail_pipeline_log_context", default=MappingProxyType({})
)


@contextlib.contextmanager
def pipeline_context(**fields: str) -> Iterator[None]:
    """Every line logged inside carries ``fields`` (``stage``, ``run_id``)."""
    token = _pipeline.set({**_pipeline.get(), **fields})
    try:
        yield
    finally:
        _pipeline.reset(token)


def bind(**fields: str) -> None:
    """Add ``fields`` to the current ``pipeline_context`` (undone when it ends)."""
    _pipeline.set({**_pipeline.get(), **fields})


def on_google_cloud(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in GOOGLE_CLOUD_MARKERS)


def trace_fields(project: str, traceparent: str | None, cloud_trace: str | None) -> dict[str, str]:
    """The trace members for a request's log lines, from W3C or Google's header."""
    trace = span = None
    if traceparent and (match := _TRACEPARENT.match(traceparent.strip())):
        trace, span = match.group(1), match.group(2)
    elif cloud_trace and (match := _CLOUD_TRACE.match(cloud_trace.strip())):
        trace = match.group(1)
        span = format(int(match.group(2)), "016x") if match.group(2) else None
    fields: dict[str, str] = {}
    if trace:
        fields[_TRACE_KEY] = f"projects/{project}/traces/{trace}"
        if span:
            fields[_SPAN_KEY] = span
    return fields


class PipelineContextFilter(logging.Filter):
    """Copies the current pipeline context onto each record, in the emitting thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.pipeline = dict(_pipeline.get())
        return True


class CloudLoggingFormatter(logging.Formatter):
    """One Cloud Logging JSON line; ``extra={"fields": {...}}`` adds members."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            # Python's level names are all Cloud Logging severities.
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "logger": record.name,
            **getattr(record, "pipeline", {}),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """``12:00:01 INFO modelrail.service.pipeline [validate 1f2e…]: message`` for people."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(where)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        context = getattr(record, "pipeline", {})
        where = " ".join(context[key] for key in ("stage", "run_id") if key in context)
        record.where = f" [{where}]" if where else ""
        return super().format(record)


def formatter(environ: Mapping[str, str] | None = None) -> logging.Formatter:
    """Cloud Logging JSON on Google Cloud, text elsewhere (a ``dictConfig`` factory too)."""
    return CloudLoggingFormatter() if on_google_cloud(environ) else TextFormatter()


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is written: a test or a server
    may replace it after logging was configured."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.addFilter(PipelineContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # emit runs under the handler's lock
        super().emit(record)


def configure(level: str = "INFO", environ: Mapping[str, str] | None = None) -> logging.Logger:
    """Send the ``modelrail`` loggers to stderr in the platform's format.

    Idempotent: one handler, replaced only when the format it should have changed.
    """
    logger = logging.getLogger(ROOT_LOGGER)
    wanted = formatter(environ)
    ours = [handler for handler in logger.handlers if isinstance(handler, StderrHandler)]
    if not (len(ours) == 1 and type(ours[0].formatter) is type(wanted)):
        for handler in ours:
            logger.removeHandler(handler)
        handler = StderrHandler()
        handler.setFormatter(wanted)
        logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(level)
    return logger


def dict_config(loggers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` sending ``loggers`` to stderr in the platform's
    format (for the server's own loggers: granian's)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"platform": {"()": "modelrail.kernel.logs.formatter"}},
        "handlers": {
            "stderr": {
                "()": "modelrail.kernel.logs.StderrHandler",
                "formatter": "platform",
            }
        },
        "loggers": loggers,
    }
