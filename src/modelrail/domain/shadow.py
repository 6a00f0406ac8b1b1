"""Shadow comparison: what production answered beside what the candidate (staging)
answered for the same mirrored request, and the report over many of them.

The production service mirrors a sampled share of its ``/predict`` requests to staging
off the request path (``serving.shadow``) and writes one line per mirrored request::

    shadow/<model>/v<production>/<YYYY-MM-DD>/<HHMMSS>-<writer>-<n>.jsonl

each holding ``time`` (UTC, ``Z``), ``request_id``, ``production`` and ``candidate``
(the versions; the candidate's as its answer named it, else the last one that did),
``rows``, ``production_ms`` (production's answer, from the request's arrival),
``candidate_ms`` (the mirrored call's), ``status`` (the candidate's HTTP status, 0 when
it gave none), ``error`` (why no comparison), ``dropped`` (requests this writer dropped
since its previous line: its queue was full) and the comparison's sums: ``agree`` and
``probability_diff`` for classifiers (rows whose labels are equal; the sum over rows of
the mean absolute difference of the class probabilities), ``abs_error`` and
``sq_error`` for regression. Never a feature value: the prediction log keeps those.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PREFIX = "shadow/"
# [production] shadow_rate and min_shadow_requests when unset.
DEFAULT_RATE = 0.05
DEFAULT_MIN_REQUESTS = 100


def rate(production: Mapping[str, Any]) -> float:
    """The share of requests mirrored under ``production`` (the configuration's
    ``[production]`` table): ``shadow_rate`` while ``shadow`` is on, else 0."""
    return float(production.get("shadow_rate", DEFAULT_RATE)) if production.get("shadow") else 0.0


def definition_key(model: str) -> str:
    """Where the model's definition (its pipeline.toml's text) lies: ``Models.key`` of
    ``domain.models``, which the serving process does not import (it imports pandas)."""
    return f"models/{model}/definition.json"


def definition_rate(definition: bytes) -> float:
    """The mirrored share the stored definition (``definition_key``) configures."""
    import tomllib

    import orjson

    pipeline = tomllib.loads(orjson.loads(definition)["pipeline"])
    return rate(pipeline.get("production", {}))


def prefix(model: str, version: int | None = None) -> str:
    """Where a model's comparisons lie (those of one production ``version``)."""
    return f"{PREFIX}{model}/" if version is None else f"{PREFIX}{model}/v{version}/"


def compare(production: Sequence[Any], candidate: Sequence[Any]) -> dict[str, float]:
    """The comparison's sums for one request's two answers (each as JSON decodes it):
    ``agree`` and ``probability_diff`` for classifiers, ``abs_error`` and ``sq_error``
    for regression. ``ValueError`` when they cannot be compared (row counts, kinds)."""
    if len(production) != len(candidate):
        raise ValueError(f"{len(production)} production rows, {len(candidate)} candidate rows")
    if not production:
        return {}
    if isinstance(production[0], Mapping):
        agree, difference = 0, 0.0
        for ours, theirs in zip(production, candidate, strict=True):
            if not isinstance(theirs, Mapping):
                raise ValueError("a classifier's answer beside a regression's")
            agree += ours["label"] == theirs["label"]
            mine, other = ours["probabilities"], theirs["probabilities"]
            classes = mine.keys() | other.keys()
            difference += sum(abs(mine.get(c, 0.0) - other.get(c, 0.0)) for c in classes) / len(
                classes
            )
        return {"agree": agree, "probability_diff": difference}
    errors = [
        float(ours) - float(theirs) for ours, theirs in zip(production, candidate, strict=True)
    ]
    return {"abs_error": sum(map(abs, errors)), "sq_error": sum(e * e for e in errors)}


def _percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile of ``values`` (None without any)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The shadow report of one (production version, candidate version): ``mirrored``
    requests (``rows`` of them compared), ``dropped`` ones, ``errors`` (the candidate
    gave no comparable answer), ``agreement`` (classifiers: the share of rows with equal
    labels) and ``probability_mad``, or ``mae`` and ``rmse`` (regression), and each
    side's latency (p50, p99, in milliseconds)."""

    production: int
    candidate: int | None
    mirrored: int
    dropped: int
    errors: int
    rows: int
    agreement: float | None
    probability_mad: float | None
    mae: float | None
    rmse: float | None
    production_p50_ms: float | None
    production_p99_ms: float | None
    candidate_p50_ms: float | None
    candidate_p99_ms: float | None
    first: str | None
    last: str | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line: the numbers a person (or a refusal) names."""
        against = f"v{self.candidate}" if self.candidate is not None else "the candidate"
        text = f"{against} against v{self.production}: {self.mirrored} mirrored"
        if self.agreement is not None:
            text += f", agreement {self.agreement:.4f} (probability MAD {self.probability_mad:.4f})"
        if self.mae is not None:
            text += f", MAE {self.mae:.6g}, RMSE {self.rmse:.6g}"
        text += f", {self.errors} error(s), {self.dropped} dropped"
        if self.production_p50_ms is not None:
            text += (
                f"; production p50/p99 {self.production_p50_ms:.1f}/{self.production_p99_ms:.1f} ms"
            )
        if self.candidate_p50_ms is not None:
            text += f", candidate {self.candidate_p50_ms:.1f}/{self.candidate_p99_ms:.1f} ms"
        return text


def report(lines: Iterable[Mapping[str, Any]]) -> list[Comparison]:
    """The comparisons of ``lines`` (the records' objects), one per (production,
    candidate) pair, in that order."""
    groups: dict[tuple[int, int | None], list[Mapping[str, Any]]] = {}
    for line in lines:
        groups.setdefault((line["production"], line.get("candidate")), []).append(line)
    return [
        _comparison(production, candidate, group)
        for (production, candidate), group in sorted(
            groups.items(), key=lambda item: (item[0][0], item[0][1] or 0)
        )
    ]


def _comparison(
    production: int, candidate: int | None, lines: Sequence[Mapping[str, Any]]
) -> Comparison:
    compared = [line for line in lines if not line.get("error")]
    rows = sum(int(line["rows"]) for line in compared)
    classified = [line for line in compared if "agree" in line]
    regressed = [line for line in compared if "abs_error" in line]
    agreement = probability_mad = mae = rmse = None
    if classified and rows:
        agreement = sum(line["agree"] for line in classified) / rows
        probability_mad = sum(line["probability_diff"] for line in classified) / rows
    if regressed and rows:
        mae = sum(line["abs_error"] for line in regressed) / rows
        rmse = math.sqrt(sum(line["sq_error"] for line in regressed) / rows)
    ours = [float(line["production_ms"]) for line in lines]
    theirs = [float(line["candidate_ms"]) for line in compared]
    times = sorted(str(line["time"]) for line in lines)
    return Comparison(
        production=production,
        candidate=candidate,
        mirrored=len(lines),
        dropped=sum(int(line.get("dropped", 0)) for line in lines),
        errors=len(lines) - len(compared),
        rows=rows,
        agreement=agreement,
        probability_mad=probability_mad,
        mae=mae,
        rmse=rmse,
        production_p50_ms=_percentile(ours, 50),
        production_p99_ms=_percentile(ours, 99),
        candidate_p50_ms=_percentile(theirs, 50),
        candidate_p99_ms=_percentile(theirs, 99),
        first=times[0] if times else None,
        last=times[-1] if times else None,
    )


def shortfall(
    comparison: Comparison | None,
    *,
    production: int,
    candidate: int,
    min_agreement: float | None,
    min_requests: int,
) -> str | None:
    """Why the shadow report of ``candidate`` against ``production`` does not allow a
    promotion (``[production] min_shadow_agreement``, ``min_shadow_requests``), or None.
    A regression's agreement is not measured: only the number of requests counts."""
    if min_agreement is None:
        return None
    needed = (
        f"[production] min_shadow_agreement = {min_agreement:g} over at least "
        f"{min_requests} mirrored request(s)"
    )
    if comparison is None or comparison.mirrored - comparison.errors < min_requests:
        compared = 0 if comparison is None else comparison.mirrored - comparison.errors
        return (
            f"v{candidate} was compared with production's v{production} on {compared} "
            f"mirrored request(s); {needed} (modelrail shadow report)"
        )
    if comparison.agreement is not None and comparison.agreement < min_agreement:
        return (
            f"v{candidate} agreed with production's v{production} on "
            f"{comparison.agreement:.4f} of {comparison.rows:,} row(s) "
            f"({comparison.mirrored - comparison.errors:,} request(s)); {needed}"
        )
    return None
