"""The prediction log's layout and lines: where a served version's sampled requests
lie in the artifact bucket, and what one line holds. The staging and production
services write them (``serving.prediction_log``); the monitor and a production
canary's judgement read them (``service.monitoring``).

``predictions/<model>/v<version>/<YYYY-MM-DD>/<HHMMSS>-<writer>-<n>.jsonl``: one object
per batch, one JSON line per request, holding ``time`` (UTC, ``Z``), ``request_id``,
``status``, the ``service`` that answered (a version may serve on staging and on
production at once; absent where the server was given no name), and either the
``instances`` (the model's feature vectors: each feature as the model reads it, a
category as its index in the version's category list, missing as ``null``), the
``predictions`` as answered and ``unseen`` (per feature, the values that were
categories the version does not know: missing in the instances); or, for a refused
request, its ``problem`` type and number of ``errors``. Never a request's body.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

PREFIX = "predictions/"
_encode = msgspec.json.Encoder().encode


def prefix(model: str, version: int) -> str:
    """Where a version's log lies."""
    return f"{PREFIX}{model}/v{version}/"


def day_prefix(model: str, version: int, day: Any) -> str:
    """Where a version's log of one day (a ``date``) lies."""
    return f"{prefix(model, version)}{day:%Y-%m-%d}/"


def written_before(key: str, moment: datetime) -> bool:
    """Whether the object ``key`` of a day's log (its name ``<HHMMSS>-...``, the second
    it was written, UTC) was written in a second before ``moment``'s, which is on that
    day; False for a name not of that form."""
    name = key.rsplit("/", 1)[-1]
    written = name[:6]
    if len(name) < 7 or name[6] != "-" or not written.isdigit():
        return False
    return written < f"{moment.astimezone(UTC):%H%M%S}"


def timestamp(moment: datetime) -> str:
    """``moment`` as a line writes its time: UTC to the microsecond, with ``Z``;
    such strings sort as the moments do."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def record(item: tuple[Any, ...], service: str | None = None) -> dict[str, Any]:
    """A held request (``(time.time(), request_id, 200, matrix, predictions, unseen)``,
    or ``(time.time(), request_id, status, problem, errors)``) as its line's object,
    answered by ``service``."""
    at, request_id, status, *rest = item
    line: dict[str, Any] = {
        "time": timestamp(datetime.fromtimestamp(at, UTC)),
        "request_id": request_id,
        "status": status,
    }
    if service is not None:
        line["service"] = service
    if status == 200:
        matrix, predictions, unseen = rest
        line["instances"] = matrix
        line["predictions"] = orjson.Fragment(_encode(predictions))
        if unseen:
            line["unseen"] = dict(unseen)
    else:
        line["problem"], line["errors"] = rest
    return line
