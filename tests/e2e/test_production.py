"""Production from the CLI, in embedded mode: a version staging serves is proposed by
one person and approved by another, then served by the model's own production service
(its own supervisor and port), which `modelrail models` names."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import PENGUINS
from tests.e2e.test_cli import INSTANCE, User, _free_port

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-production")]


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[User]:
    """v1 on staging, nothing in production yet."""
    user = User(tmp_path_factory.mktemp("production") / "home")
    user.env["MODELRAIL_PRODUCTION_PORT"] = str(_free_port())
    try:
        user.run("demo")
        yield user
    finally:
        user.run("down", check=False)


def _as(user: User, actor: str, *args: str, check: bool = True) -> str:
    user.env["MODELRAIL_ACTOR"] = actor
    try:
        result = user.run(*args, check=check)
    finally:
        del user.env["MODELRAIL_ACTOR"]
    return result.stdout + result.stderr


def _proposal_id(output: str) -> str:
    found = re.search(r"proposal (\w+):", output)
    assert found is not None, output
    return found.group(1)


def _production_version(url: str) -> int:
    response = requests.post(f"{url}/predict", json={"instances": [INSTANCE]}, timeout=10)
    assert response.status_code == 200, response.text
    return int(response.json()["model"]["version"])


def test_a_promotion_approved_by_someone_else_serves_production(user: User) -> None:
    proposed = _as(user, "ana", "promote", "--reason", "v1 passed staging")
    proposal = _proposal_id(proposed)

    own = _as(user, "ana", "approve", proposal, "--reason", "mine", check=False)
    assert "ana proposed" in own
    assert "someone else approves it" in own

    approved = _as(user, "bo", "approve", proposal, "--reason", "checked")
    assert "production moved from nothing to v1" in approved

    [model] = user.json("models")  # type: ignore[misc]
    assert model["aliases"]["production"] == 1
    url = model["production_url"]
    assert url != model["staging_url"]
    assert _production_version(url) == 1
    assert (
        f"production {url}: serves penguins v1, what its production alias names"
        in user.run("models").stdout
    )

    again = _as(user, "cy", "approve", proposal, "--reason", "late", check=False)
    assert "was decided already: approved by bo" in again


def test_production_stays_while_staging_moves_then_follows_an_approved_proposal(
    user: User, tmp_path_factory: pytest.TempPathFactory
) -> None:
    header, *rows = PENGUINS.read_text().splitlines()
    second = tmp_path_factory.mktemp("data") / "penguins-2.csv"
    second.write_text("\n".join([header, *rows[::-1]]) + "\n")
    user.run("upload", str(second))
    [model] = user.json("models")  # type: ignore[misc]
    assert (model["aliases"]["staging"], model["aliases"]["production"]) == (2, 1)
    assert _production_version(model["production_url"]) == 1

    stale = _proposal_id(_as(user, "ana", "promote", "--version", "2", "--reason", "a"))
    fresh = _proposal_id(_as(user, "cy", "promote", "--reason", "v2 is better"))
    _as(user, "bo", "approve", fresh, "--reason", "ok")
    refused = _as(user, "bo", "approve", stale, "--reason", "ok", check=False)

    assert "is stale: production moved" in refused
    assert _production_version(model["production_url"]) == 2
    history = user.run("promotions").stdout
    assert f"{fresh}  v2  succeeded" in history
    assert "approved by bo" in history
    assert f"{stale}  v2  pending" in history
    status = user.run("rollout", "status").stdout
    assert f"{fresh}  v2  succeeded" in status
    assert "100 % from " in status  # its one step (no canary configured)
    [entry] = [e for e in user.json("promotions") if e["proposal"]["id"] == fresh]  # type: ignore[union-attr]
    assert entry["approval"]["approved_by"] == "bo"


def test_runs_and_the_card_show_which_version_served_production_from_when_to_when(
    user: User,
) -> None:
    """After the two tests above: v1 promoted (ana, bo), v2 staged by a second upload
    and promoted (cy, bo), a stale proposal of v2 left pending."""
    history = user.json("promotions")
    assert isinstance(history, list)
    first, stale, fresh = (entry["proposal"]["id"] for entry in history)
    v1_from, v2_from = (e["outcome"]["finished_at"] for e in history if e["outcome"])

    listed = user.json("runs")
    assert isinstance(listed, list)
    kinds = [(e["kind"], e.get("run_id") or e["proposal"]["id"]) for e in listed]
    # In the order they began: the demo's run, v1's promotion, the upload's run, v2's.
    demo, upload = (name for kind, name in kinds if kind == "run")
    assert kinds == [
        ("run", demo), ("promotion", first), ("run", upload),
        ("promotion", stale), ("promotion", fresh),
    ]  # fmt: skip
    shown = {e["proposal"]["id"]: e for e in listed if e["kind"] == "promotion"}
    assert shown[fresh]["approval"]["approved_by"] == "bo"
    assert [step["percent"] for step in shown[fresh]["steps"]] == [100.0]

    text = user.run("runs").stdout
    assert (
        f"{fresh}  {shown[fresh]['proposal']['proposed_at']}  penguins  succeeded   "
        "promotion: v1 → v2, proposed by cy, approved by bo"
    ) in text
    assert "promotion: nothing → v1, proposed by ana, approved by bo" in text
    assert f"{stale}  " in text
    assert "pending     promotion: v1 → v2, proposed by ana\n" in text
    assert f"production serves v2 from {v2_from}" in text
    assert text.index(first) < text.index(upload) < text.index(fresh)

    full = user.run("runs", fresh).stdout
    assert f"penguins production promotion {fresh}  v2  succeeded" in full
    assert "approved by bo at " in full
    assert "100 % from " in full
    assert user.json("runs", fresh)["kind"] == "promotion"  # type: ignore[index]

    card_v1, card_v2 = user.run("card", "1").stdout, user.run("card", "2").stdout
    assert f"<td>production</td><td>{v1_from}</td><td>{v2_from}</td>" in card_v1
    assert f"promotion <code>{first}</code>, proposed by ana, approved by bo" in card_v1
    assert f"<td>production</td><td>{v2_from}</td><td><b>still serving</b></td>" in card_v2
    assert f"promotion <code>{fresh}</code>, proposed by cy, approved by bo" in card_v2
    assert f'id="promotion-{stale}"' in card_v2  # proposed, never approved
    assert "<td>staging</td>" in card_v1
    assert "<td>staging</td>" in card_v2
    assert card_v2.rstrip().endswith("</html>")
