"""The model page shows production's history: each proposal, who proposed and approved
it, and what production served from when, or why its rollout failed; a version's card
says where it served."""

from __future__ import annotations

import dataclasses

import pytest

from modelrail.domain.promotion import Promotions
from modelrail.service.promotion import approve, propose
from modelrail.settings.process import Settings
from modelrail.ui import create_app
from tests.unit.conftest import Harness
from tests.unit.test_promotion import _production


@dataclasses.dataclass(frozen=True)
class Promoted:
    harness: Harness
    first: str
    second: str


@pytest.fixture
def promoted(settings: Settings, penguins_csv: bytes) -> Promoted:
    """v1 promoted by ana, approved by bo; v2 proposed by cy, approved by dee, its
    rollout failed (its server answers 500)."""
    production = _production(settings, fail_versions=frozenset({2}))
    harness = production.harness
    harness.upload(penguins_csv)
    harness.run()
    first = production.promote_and_approve()
    harness.retrain("second")
    harness.run()
    second = propose(harness.container, version=2, reason="try v2", proposed_by="cy")
    approve(harness.container, second.id, reason="go", approved_by="dee")
    return Promoted(harness, first, second.id)


def test_the_model_page_shows_who_promoted_which_version_and_what_failed(
    promoted: Promoted,
) -> None:
    harness, first, second = promoted.harness, promoted.first, promoted.second
    page = create_app(harness.container).test_client().get(f"/models/{harness.model}")

    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert f'id="promotion-{first}"' in text
    assert "ana," in text
    assert "bo," in text
    assert "serves from" in text
    assert f'id="promotion-{second}"' in text
    assert "cy," in text
    assert "dee," in text
    assert "/predict answered 500" in text
    assert text.index(second) < text.index(first)  # newest first


def test_a_versions_card_says_where_it_served_beside_what_was_signed(
    promoted: Promoted,
) -> None:
    harness, first, second = promoted.harness, promoted.first, promoted.second
    client = create_app(harness.container).test_client()
    outcome = Promotions(harness.container.artifacts).outcome(harness.model, first)
    assert outcome is not None

    v1 = client.get(f"/models/{harness.model}/versions/1/card.html").get_data(as_text=True)
    v2 = client.get(f"/models/{harness.model}/versions/2/card.html").get_data(as_text=True)

    stored = harness.container.registry.read_file(harness.model, 1, "card.html")
    assert stored is not None
    assert "Where it served" not in stored.decode()  # the signed card is left as it was
    assert v1.startswith(stored.decode().partition("</body>")[0])
    served = f"<td>production</td><td>{outcome.finished_at}</td><td><b>still serving</b></td>"
    assert served in v1
    assert f"promotion <code>{first}</code>, proposed by ana, approved by bo" in v1
    assert "<td>production</td>" not in v2
    assert f'id="promotion-{second}"' in v2
    assert "approved by dee" in v2
    assert "/predict answered 500" in v2
