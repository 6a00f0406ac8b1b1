"""The shadow report: the comparison records the production service wrote
(``serving.shadow``, layout in ``domain.shadow``), read from the artifact bucket for a
window of time and summed per (production version, candidate version); and the check a
promotion makes against it (``[production] min_shadow_agreement``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from modelrail.domain import shadow
from modelrail.domain.config import PipelineConfig
from modelrail.domain.predictions import timestamp
from modelrail.kernel.errors import Refused
from modelrail.kernel.ports import BlobStore


def lines(
    store: BlobStore, model: str, *, since: datetime, until: datetime, production: int | None = None
) -> Iterator[dict[str, Any]]:
    """The comparison records of ``model`` (of one ``production`` version) written
    between ``since`` and ``until``; objects of other days are not read."""
    first, last = since.astimezone(UTC).date(), until.astimezone(UTC).date()
    low, high = timestamp(since), timestamp(until)
    for blob in store.list(shadow.prefix(model, production)):
        day = _day(blob.key)
        if day is None or not first <= day <= last:
            continue
        for raw in store.read(blob.key).data.splitlines():
            line = orjson.loads(raw)
            if low <= line["time"] <= high:
                yield line


def _day(key: str) -> date | None:
    """The day a record's key names (``.../v<N>/<YYYY-MM-DD>/<file>``)."""
    try:
        return date.fromisoformat(key.rsplit("/", 2)[-2])
    except (ValueError, IndexError):
        return None


def report(
    store: BlobStore,
    model: str,
    *,
    since: datetime,
    until: datetime,
    production: int | None = None,
) -> list[shadow.Comparison]:
    """Every (production, candidate) comparison of ``model`` in the window."""
    return shadow.report(lines(store, model, since=since, until=until, production=production))


# How far back a promotion's check reads: a comparison older than this says little
# about the version production serves now.
CHECK_WINDOW = timedelta(days=7)


def refuse_short(
    store: BlobStore,
    config: PipelineConfig,
    model: str,
    *,
    production: int | None,
    candidate: int,
    now: datetime | None = None,
) -> None:
    """``Refused``, naming the numbers, when ``config`` requires a shadow agreement
    (``[production] min_shadow_agreement``) that the comparison of ``candidate`` with
    ``production`` over the last ``CHECK_WINDOW`` falls short of. Nothing to compare
    with (no production yet) or no requirement: no check."""
    if config.min_shadow_agreement is None or production is None:
        return
    until = now or datetime.now(UTC)
    found = {
        comparison.candidate: comparison
        for comparison in report(
            store, model, since=until - CHECK_WINDOW, until=until, production=production
        )
    }
    why = shadow.shortfall(
        found.get(candidate),
        production=production,
        candidate=candidate,
        min_agreement=config.min_shadow_agreement,
        min_requests=config.min_shadow_requests,
    )
    if why is not None:
        raise Refused(f"the shadow comparison falls short: {why}")
