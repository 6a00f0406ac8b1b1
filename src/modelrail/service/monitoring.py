"""``modelrail monitor``: one window of a served version's prediction log, judged
against its training data (``domain.monitoring``), kept as a report.

The version is the one staging serves unless one is named. Its manifest is verified
as the service verifies it (``Registry.load``) before its training profile is trusted.
The log is read a day's folder at a time (``predictions/<model>/v<version>/<date>/``),
an object at a time: memory holds one object and the tallies, whatever the window. A
line that is not JSON, or not a record of this version, is skipped and counted
(``skipped_lines``), never fatal. The report is written to
``monitoring/<model>/v<version>/<end of window>.json`` in the artifact bucket.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from modelrail.domain import monitoring, predictions
from modelrail.domain.features import FeatureSchema
from modelrail.domain.registry import PROFILE_FILE
from modelrail.kernel.canonical import canonical_json
from modelrail.kernel.errors import NotFound, Refused
from modelrail.service.container import Container
from modelrail.service.reconcile import STAGING

REPORT_PREFIX = "monitoring/"


def monitor(
    container: Container,
    *,
    since: datetime,
    until: datetime,
    version: int | None = None,
) -> dict[str, Any]:
    """The monitoring report of the model's version (staging's unless named) over
    [``since``, ``until``), saved in the artifact bucket."""
    if since >= until:
        raise Refused(f"the window is empty: {since.isoformat()} is not before {until.isoformat()}")
    model, registry = container.model, container.registry
    if version is None:
        alias = registry.alias(model, STAGING)
        if alias is None:
            raise Refused(f"model {model!r} has no version in staging: nothing serves it yet")
        version = alias.version
    try:
        loaded = registry.load(model, version)
    except NotFound:
        raise Refused(f"model {model!r} has no version {version}") from None
    baseline = registry.file(loaded.manifest, PROFILE_FILE)
    if baseline is None:
        raise Refused(f"{model} v{version} kept no training profile to compare with")
    tally = monitoring.Tally(
        FeatureSchema.from_dict(loaded.manifest.features), orjson.loads(baseline)
    )
    start, end = predictions.timestamp(since), predictions.timestamp(until)
    for line in _lines(container, model, version, since, until):
        if isinstance(line, dict) and start <= str(line.get("time", "")) < end:
            tally.add(line)
        elif not isinstance(line, dict):
            tally.skipped += 1
    config = container.config
    result = monitoring.report(
        tally,
        config.drift_columns,
        config.drift,
        model=model,
        version=version,
        window={"from": start, "to": end},
    )
    key = f"{REPORT_PREFIX}{model}/v{version}/{until:%Y-%m-%dT%H%M%S}Z.json"
    container.artifacts.write(key, canonical_json(result), content_type="application/json")
    result["report_uri"] = container.artifacts.uri(key)
    return result


def _lines(
    container: Container, model: str, version: int, since: datetime, until: datetime
) -> Iterator[Any]:
    """Every line of the version's log in the days the window touches (None for a line
    that is not JSON)."""
    store = container.artifacts
    day = since.astimezone(UTC).date()
    while day <= until.astimezone(UTC).date():
        for blob in store.list(predictions.day_prefix(model, version, day)):
            for line in store.read(blob.key).data.splitlines():
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    yield None
        day += timedelta(days=1)
