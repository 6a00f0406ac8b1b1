"""Structured logs in Cloud Logging's JSON format, one object per line on stdout.

Cloud Run and Vertex AI forward stdout to Cloud Logging, which reads ``severity``,
``message``, ``time``, ``httpRequest``, and the ``logging.googleapis.com/trace`` and
``spanId`` members to group a request's lines under its trace.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

_TRACE_KEY = "logging.googleapis.com/trace"
_SPAN_KEY = "logging.googleapis.com/spanId"
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d+))?")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


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


class CloudLoggingFormatter(logging.Formatter):
    """Formats a record as one Cloud Logging JSON line; ``extra={"fields": {...}}`` adds members."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname if record.levelname != "WARNING" else "WARNING",
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str = "INFO") -> logging.Logger:
    """Route the ``modelrail`` loggers to stdout as Cloud Logging JSON (idempotent)."""
    logger = logging.getLogger("modelrail")
    if not any(getattr(h, "_modelrail_json", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(CloudLoggingFormatter())
        handler._modelrail_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)
    return logger


def dict_config(loggers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` sending ``loggers`` to stdout as Cloud Logging JSON."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "modelrail.serving.logs.CloudLoggingFormatter"}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": loggers,
    }
