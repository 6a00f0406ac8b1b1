"""The model page shows production's history: each proposal, who proposed and approved
it, and what production served from when, or why its rollout failed."""

from __future__ import annotations

from modelrail.service.promotion import approve, propose
from modelrail.settings.process import Settings
from modelrail.ui import create_app
from tests.unit.test_promotion import _production


def test_the_model_page_shows_who_promoted_which_version_and_what_failed(
    settings: Settings, penguins_csv: bytes
) -> None:
    production = _production(settings, fail_versions=frozenset({2}))
    harness = production.harness
    harness.upload(penguins_csv)
    harness.run()
    first = production.promote_and_approve()
    harness.retrain("second")
    harness.run()
    second = propose(harness.container, version=2, reason="try v2", proposed_by="cy")
    approve(harness.container, second.id, reason="go", approved_by="dee")

    page = create_app(harness.container).test_client().get(f"/models/{harness.model}")

    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert f'id="promotion-{first}"' in text
    assert "ana," in text
    assert "bo," in text
    assert "serves from" in text
    assert f'id="promotion-{second.id}"' in text
    assert "cy," in text
    assert "dee," in text
    assert "/predict answered 500" in text
    assert text.index(second.id) < text.index(first)  # newest first
