"""The model page shows the latest shadow comparison: the candidate against production,
with its agreement and latencies."""

from __future__ import annotations

from modelrail.ui import create_app
from tests.unit.test_promotion import Production, versions  # noqa: F401 (the fixture)
from tests.unit.test_shadow import _line, _write


def test_the_model_page_shows_the_latest_shadow_comparison(
    versions: Production,  # noqa: F811 (the fixture)
) -> None:
    client = create_app(versions.container).test_client()
    assert 'id="shadow"' not in client.get(f"/models/{versions.harness.model}").get_data(
        as_text=True
    )

    _write(versions, [_line(agree=1, probability_diff=0.0)] * 4)
    text = client.get(f"/models/{versions.harness.model}").get_data(as_text=True)

    assert 'id="shadow"' in text
    assert "v2 against v1: 4 mirrored, agreement 0.5000" in text
