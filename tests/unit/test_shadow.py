"""The shadow comparison: the report summed from the records, the configuration that
turns it on, and a promotion refused, naming the numbers, while it falls short."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from modelrail.domain import predictions, shadow
from modelrail.domain.config import DEFAULT_SHADOW_RATE, PipelineConfig
from modelrail.kernel.errors import ConfigError, Refused
from modelrail.service.promotion import approve, propose
from tests.conftest import REPO
from tests.unit.test_promotion import Production, versions  # noqa: F401 (the fixture)


def _line(**fields: Any) -> dict[str, Any]:
    return {
        "time": "2026-01-02T03:04:05.000000Z",
        "request_id": "r",
        "production": 1,
        "candidate": 2,
        "rows": 2,
        "production_ms": 1.0,
        "candidate_ms": 2.0,
        "status": 200,
        **fields,
    }


def test_classifier_answers_compare_by_label_and_probabilities() -> None:
    ours = [
        {"label": "a", "probabilities": {"a": 0.9, "b": 0.1}},
        {"label": "a", "probabilities": {"a": 0.6, "b": 0.4}},
    ]
    theirs = [
        {"label": "a", "probabilities": {"a": 0.8, "b": 0.2}},
        {"label": "b", "probabilities": {"a": 0.4, "b": 0.6}},
    ]
    sums = shadow.compare(ours, theirs)
    assert sums["agree"] == 1
    assert sums["probability_diff"] == pytest.approx(0.1 + 0.2)


def test_regression_answers_compare_by_their_error() -> None:
    assert shadow.compare([1.0, 2.0], [2.0, 4.0]) == {"abs_error": 3.0, "sq_error": 5.0}
    with pytest.raises(ValueError, match="2 production rows, 1 candidate rows"):
        shadow.compare([1.0, 2.0], [2.0])


def test_the_report_sums_per_version_pair_and_counts_errors_and_drops() -> None:
    lines = [
        _line(agree=2, probability_diff=0.0, production_ms=1.0, candidate_ms=10.0),
        _line(agree=1, probability_diff=0.5, production_ms=3.0, candidate_ms=30.0, dropped=4),
        _line(status=0, error="ConnectionError: refused", candidate_ms=None, production_ms=2.0),
        _line(candidate=3, rows=1, abs_error=2.0, sq_error=4.0),
    ]
    against_2, against_3 = shadow.report(lines)

    assert (against_2.production, against_2.candidate) == (1, 2)
    assert (against_2.mirrored, against_2.errors, against_2.dropped, against_2.rows) == (3, 1, 4, 4)
    assert against_2.agreement == 0.75
    assert against_2.probability_mad == pytest.approx(0.125)
    assert (against_2.production_p50_ms, against_2.production_p99_ms) == (2.0, 3.0)
    assert (against_2.candidate_p50_ms, against_2.candidate_p99_ms) == (10.0, 30.0)
    assert (against_3.mae, against_3.rmse, against_3.agreement) == (2.0, 2.0, None)
    assert "agreement 0.7500" in against_2.describe()


def test_a_promotion_check_names_the_numbers_it_missed() -> None:
    [comparison] = shadow.report([_line(agree=1, probability_diff=0.0)] * 3)
    short = shadow.shortfall(
        comparison, production=1, candidate=2, min_agreement=0.9, min_requests=2
    )
    assert short is not None
    assert "agreed with production's v1 on 0.5000 of 6 row(s)" in short
    few = shadow.shortfall(comparison, production=1, candidate=2, min_agreement=0.4, min_requests=5)
    assert few is not None
    assert "on 3 mirrored request(s)" in few
    assert (
        shadow.shortfall(None, production=1, candidate=2, min_agreement=None, min_requests=5)
        is None
    )
    assert (
        shadow.shortfall(comparison, production=1, candidate=2, min_agreement=0.4, min_requests=3)
        is None
    )


def _config(tmp_path: Path, production: str) -> PipelineConfig:
    text = (REPO / "pipeline.toml").read_text()
    text = text.replace('contract = "schemas/', f'contract = "{REPO}/schemas/')
    (tmp_path / "pipeline.toml").write_text(f"{text}\n[production]\n{production}\n")
    return PipelineConfig.load(tmp_path / "pipeline.toml")


def test_shadow_is_off_by_default_and_read_from_production(tmp_path: Path) -> None:
    default = _config(tmp_path, "")
    assert (default.shadow, default.shadow_rate, default.min_shadow_agreement) == (
        False,
        DEFAULT_SHADOW_RATE,
        None,
    )
    configured = _config(
        tmp_path,
        "shadow = true\nshadow_rate = 0.5\nmin_shadow_agreement = 0.95\nmin_shadow_requests = 7",
    )
    assert (configured.shadow, configured.shadow_rate) == (True, 0.5)
    assert (configured.min_shadow_agreement, configured.min_shadow_requests) == (0.95, 7)
    with pytest.raises(ConfigError, match="shadow_rate"):
        _config(tmp_path, "shadow = true\nshadow_rate = 2")


def _write(production: Production, lines: list[dict[str, Any]]) -> None:
    now = datetime.now(UTC)
    stamped = [{**line, "time": predictions.timestamp(now)} for line in lines]
    production.container.artifacts.write(
        f"{shadow.prefix(production.harness.model, 1)}{now:%Y-%m-%d}/0-{len(lines)}.jsonl",
        b"".join(orjson.dumps(line) + b"\n" for line in stamped),
    )


@pytest.mark.fault
def test_a_promotion_short_of_the_shadow_minimum_is_refused(
    versions: Production,  # noqa: F811 (the fixture)
) -> None:
    container = versions.container
    container.__dict__["config"] = dataclasses.replace(
        container.config, min_shadow_agreement=0.9, min_shadow_requests=3
    )
    with pytest.raises(Refused, match=r"compared with production's v1 on 0 mirrored"):
        propose(container, version=None, reason="v2", proposed_by="ana")

    _write(versions, [_line(agree=1, probability_diff=0.0)] * 3)
    with pytest.raises(Refused, match=r"agreed with production's v1 on 0\.5000 of 6 row"):
        propose(container, version=None, reason="v2", proposed_by="ana")

    _write(versions, [_line(agree=2, probability_diff=0.0)] * 30)
    proposal = propose(container, version=None, reason="v2", proposed_by="ana")
    assert approve(container, proposal.id, reason="ok", approved_by="bo").status == "succeeded"


def test_the_serving_process_reads_the_rate_where_and_as_the_configuration_says(
    tmp_path: Path,
) -> None:
    from modelrail.domain.models import Definition, Models

    _config(tmp_path, "shadow = true\nshadow_rate = 0.25")
    definition = orjson.dumps(Definition.from_files(tmp_path / "pipeline.toml").to_json())
    assert shadow.definition_key("penguins") == Models.key("penguins")
    assert shadow.definition_rate(definition) == 0.25
    assert shadow.rate({"shadow_rate": 0.25}) == 0.0
    assert shadow.rate({"shadow": True}) == DEFAULT_SHADOW_RATE
