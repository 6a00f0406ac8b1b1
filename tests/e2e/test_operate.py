"""Operating modelrail from the CLI: why runs failed, one run in full, cards, rollback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PENGUINS
from tests.e2e.test_cli import User, _served_version, promoted

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-operate")]


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[User]:
    """Two versions, staging on v2, and one upload that broke its contract."""
    folder = tmp_path_factory.mktemp("operate")
    user = User(folder / "home")
    try:
        user.run("demo")
        header, *rows = PENGUINS.read_text().splitlines()
        second = folder / "penguins-2.csv"
        second.write_text("\n".join([header, *rows[::-1]]) + "\n")
        user.run("upload", str(second))
        # Staging follows v2; the champion follows it only if v2 is at least as good.
        user.champion = 2 if promoted(user, user.json("runs")[-1]["run_id"]) else 1  # type: ignore[attr-defined,index]
        broken = folder / "broken.csv"
        broken.write_text(PENGUINS.read_text().replace(",year", ",season"))
        user.run("upload", str(broken), check=False)
        yield user
    finally:
        user.run("down", check=False)


def test_runs_says_why_a_run_failed(user: User) -> None:
    output = user.run("runs").stdout

    assert "validate failed (contract_violation):" in output
    assert "[missing_column] required column 'year' is missing" in output


def test_runs_with_a_run_id_shows_that_run_in_full(user: User) -> None:
    failed = [r for r in user.json("runs") if r["outcome"] == "failed"]  # type: ignore[attr-defined]
    run_id = failed[-1]["run_id"]

    output = user.run("runs", run_id).stdout

    assert f"run {run_id}: failed" in output
    assert "validate: failed" in output
    assert "published pipeline-failed" in output
    report_line = next(line for line in output.splitlines() if "validation report:" in line)
    assert Path(report_line.split("validation report:")[1].strip()).is_file()  # a local file
    assert '"trigger"' in output  # the lineage
    assert "    memory: peak RSS " in output  # users size machines from it


def test_models_prints_aliases_and_each_cards_file(user: User) -> None:
    output = user.run("models").stdout

    assert f"aliases: champion → v{user.champion}, staging → v2" in output  # type: ignore[attr-defined]
    cards = [line.split("card ", 1)[1] for line in output.splitlines() if "card " in line]
    assert len(cards) == 2
    assert all(Path(card).is_file() and card.endswith("card.html") for card in cards)
    stored = [line.split("stored ", 1)[1] for line in output.splitlines() if "stored " in line]
    assert [Path(folder).name for folder in stored] == ["1", "2"]
    assert all((Path(folder) / "manifest.json").is_file() for folder in stored)
    published = [line.split()[1:] for line in output.splitlines() if "published " in line]
    assert [p[:2] for p in published] == [["penguins", "v1"], ["penguins", "v2"]]
    assert all((Path(p[2].removeprefix("file://")) / "model.txt").is_file() for p in published)


def test_rollback_keeps_staging_when_the_smoke_test_fails_then_moves_it_back(
    user: User,
) -> None:
    model_file = Path(user.env["MODELRAIL_HOME"]) / (
        "buckets/modelrail-artifacts/models/penguins/versions/1/model.txt"
    )
    original = model_file.read_bytes()
    model_file.write_bytes(original + b"\n# tampered\n")  # v1 can no longer load
    try:
        failed = user.run("rollback", "--reason", "v2 misbehaves", check=False)
    finally:
        model_file.write_bytes(original)

    assert failed.returncode == 1
    assert "rollback failed (deployment_failed)" in failed.stdout
    assert _served_version(user) == 2
    assert user.json("models")[0]["aliases"]["staging"] == 2  # type: ignore[index]

    moved = user.run("rollback", "--reason", "v2 misbehaves")

    assert "staging moved from v2 to v1" in moved.stdout
    assert _served_version(user) == 1
    [model] = user.json("models")  # type: ignore[misc]
    assert model["aliases"] == {"champion": user.champion, "staging": 1}  # type: ignore[attr-defined]
    last = user.json("runs")[-1]  # type: ignore[index]
    assert last["outcome"] == "rolled-back"
    assert last["trigger"]["kind"] == "rollback"
