"""`modelrail monitor` on what the staging service logged, as a user drives it: version
1 of the penguins serves, logging every request; 5,000 instances drawn from its
training data, then 5,000 with the flipper length shifted. The monitor finds nothing in
the first window and names that feature, and only it, in the second."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from tests.conftest import PENGUINS, REPO, penguin_rows
from tests.e2e.test_own_data import OwnUser

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("monitor")]

REQUESTS, ROWS = 50, 100  # 5,000 instances a window
SHIFTED = "flipper_length_mm"


@pytest.fixture
def user(tmp_path: Path) -> Iterator[OwnUser]:
    """The bundled penguins definition, logging every request, trained and served."""
    user = OwnUser(tmp_path)
    contract = Path("schemas") / "datasets" / "penguins.json"
    (tmp_path / contract).parent.mkdir(parents=True)
    shutil.copy(REPO / contract, tmp_path / contract)
    pipeline = (REPO / "pipeline.toml").read_text()
    assert "log_rate = 0.05" in pipeline
    (tmp_path / "pipeline.toml").write_text(pipeline.replace("log_rate = 0.05", "log_rate = 1.0"))
    try:
        user.run("add", "pipeline.toml")
        user.run("upload", str(PENGUINS))
        yield user
    finally:
        user.run("down", check=False)


def _moment() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _send(url: str, records: list[dict[str, Any]], seed: int, shift: float = 0.0) -> None:
    draw = random.Random(seed)
    for _ in range(REQUESTS):
        rows = [dict(row) for row in draw.choices(records, k=ROWS)]
        for row in rows:
            if shift and row[SHIFTED] is not None:
                row[SHIFTED] += shift
        response = requests.post(f"{url}/predict", json={"instances": rows}, timeout=60)
        assert response.status_code == 200, response.text


def _monitor(user: OwnUser, since: str, until: str) -> dict[str, Any]:
    report: dict[str, Any] = orjson.loads(
        user.run("monitor", "--since", since, "--until", until, "--json").stdout
    )
    return report


def test_the_monitor_names_the_shifted_feature_and_only_it(user: OwnUser) -> None:
    [model] = orjson.loads(user.run("models", "--json").stdout)
    records = penguin_rows()

    start = _moment()
    _send(model["staging_url"], records, seed=1)
    middle = _moment()
    _send(model["staging_url"], records, seed=2, shift=25.0)
    end = _moment()
    user.run("down")  # its workers write what they hold as they stop

    same, shifted = _monitor(user, start, middle), _monitor(user, middle, end)

    for report in (same, shifted):
        assert (report["version"], report["requests"], report["instances"]) == (1, 50, 5000)
        assert report["judged"]
    assert same["drifted"] == [], same["features"]
    assert shifted["drifted"] == [SHIFTED], shifted["features"]
    by_feature = {row["feature"]: row for row in shifted["features"]}
    assert by_feature[SHIFTED]["psi"] > by_feature[SHIFTED]["fail"]
    assert by_feature[SHIFTED]["out_of_range"] > 0  # 25 mm past the longest flipper seen
    text = user.run("monitor", "--since", middle, "--until", end).stdout
    assert f"drifted: {SHIFTED}" in text

    # The UI's monitoring page draws each feature's PSI by window, its limits across.
    # The predictions' PSI is drawn the same way, after them.
    page = _ui(user).get("/models/penguins/monitoring").get_data(as_text=True)
    assert page.count('class="plot drift"') == len(same["features"]) + 1
    assert page.count('class="limit-fail"') == len(same["features"]) + 1
    assert f'aria-label="{SHIFTED}: PSI by monitoring window"' in page
    # The predictions' PSI by window, the last window's predicted species beside the
    # training data's, and a bar of 5,000 instances for each window.
    assert 'aria-label="predictions: PSI by monitoring window"' in page
    assert page.count('class="plot distribution"') == 1
    for species in ("Adelie", "Chinstrap", "Gentoo"):
        assert f"<title>{species}: training " in page
        assert f"<title>{species}: window " in page
    assert page.count("5000 instances</title>") == 2
    # Two windows: the shifted one monitored twice is one report, the second kept.
    assert page.count('class="window drifted"') == 1
    assert page.count('class="window"') == 1


def _ui(user: OwnUser) -> Any:
    from modelrail.composition.bootstrap import bootstrap
    from modelrail.settings.process import Settings
    from modelrail.ui import create_app

    return create_app(bootstrap(Settings.from_env(user.env))).test_client()
