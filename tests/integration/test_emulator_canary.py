"""Production's canary and shadow on the emulator stack: each model's production service
on the local Cloud Run control plane, its canary's traffic split by revision tags and
percentages and judged on the numbers the control plane answers as Cloud Monitoring,
with ``[production.canary]`` and ``[production] shadow`` on in the model's
pipeline.toml. Every local revision runs a server built to fail
(``MODELRAIL_LOCAL_SERVER_MODULE``: ``tests/e2e/faulty_server.py``), which answers 500
to some rows as v2 only.

v1 serves production and v2, blessed, staging. Production mirrors its requests to
staging, and `modelrail shadow report` compares v2 with v1, its failures counted as
errors. Then v2 is promoted and
approved: at 10 % of production's traffic it breaches, the traffic goes back to v1 and
the outcome records the numbers; a healthy v3 then goes to 100 %. Traffic runs
throughout, and every answer names a version the records say was serving then.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from modelrail.kernel.processes import wait_until
from modelrail.localcloud.emulators import free_port
from modelrail.settings.process import Settings
from tests.conftest import REPO, STATE_DEADLINE_S
from tests.e2e.faulty_server import FAULTY_SERVER, FAULTY_VERSION
from tests.e2e.test_canary import FAULTY, Traffic, _every_answer_names_what_served
from tests.e2e.test_cli import INSTANCE
from tests.integration.test_emulator_production import _as, _deployed, _production, _propose
from tests.integration.test_emulator_stack import PIPELINE_TIMEOUT_S, Stack, running_stack

pytestmark = [pytest.mark.emulator, pytest.mark.xdist_group("emulators")]

MODEL = "penguins"
REQUESTS, FAULTY_EVERY = 3000, 10
# Judged on errors (latency's judgement: tests/unit/test_rollout_policy.py): a fresh
# server's first answers on a busy machine may be slow.
PRODUCTION = """
[production]
shadow = true
shadow_rate = 1.0

[production.canary]
steps = [10, 100]
hold_seconds = 120
min_requests = 20
p99_slack_ms = 5000
"""


def _definition(directory: Path) -> Path:
    """The bundled pipeline.toml with its contract, and production's canary and shadow."""
    contract = Path("schemas") / "datasets" / "penguins.json"
    (directory / contract).parent.mkdir(parents=True)
    shutil.copy(REPO / contract, directory / contract)
    path = directory / "pipeline.toml"
    path.write_text((REPO / "pipeline.toml").read_text() + PRODUCTION)
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack with v1 in production and v2 in staging."""
    home = tmp_path_factory.mktemp("canary-stack")
    with running_stack(
        home,
        models=(_definition(home / "definition"),),
        MODELRAIL_PRODUCTION_PORT=str(free_port()),
        MODELRAIL_LOCAL_SERVER_MODULE=FAULTY_SERVER,
        # The control plane's supervisors and their servers inherit the stack's
        # environment: the version that fails, and the checkout the server is in.
        **{FAULTY_VERSION: "2"},
        PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
    ) as started:
        started.env = {**started.env, **started.state()["env"]}
        started.upload_penguins()
        approved = _as(started, "bo", "approve", _propose(started, "v1"), "--reason", "ok")
        assert "production moved from nothing to v1" in approved, approved
        started.modelrail("retrain", "--request-id", "second")
        assert wait_until(lambda: _deployed(started, 2), PIPELINE_TIMEOUT_S, 1.0), started.runs()
        yield started


def _history(stack: Stack) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = stack.json("promotions")
    return history


def _service(stack: Stack) -> dict[str, Any]:
    """Production's Cloud Run service, as the control plane's API gives it."""
    settings = Settings.from_env(stack.env)
    name = (
        f"projects/{settings.project}/locations/{settings.region}/services/"
        f"{settings.production_service}-{MODEL}"
    )
    response = requests.get(f"{settings.run_api_endpoint}/v2/{name}", timeout=30)
    assert response.status_code == 200, response.text
    service: dict[str, Any] = response.json()
    return service


def _all_traffic_on(stack: Stack) -> str:
    """The revision with all of production's traffic, named."""
    [target] = _service(stack)["traffic"]
    assert target["percent"] == 100, target
    revision: str = target["revision"]
    return revision


@pytest.mark.fault
def test_production_mirrors_to_staging_and_the_report_compares_v2_with_v1(stack: Stack) -> None:
    """Every tenth request carries the row v2 fails on: production (v1) answers each as
    ever, and the report counts v2's failures as errors beside its agreement."""
    shown = _production(stack)
    assert (shown["aliases"]["production"], shown["aliases"]["staging"]) == (1, 2)

    answers = set()
    with requests.Session() as session:
        for count in range(REQUESTS):
            row = FAULTY if count % FAULTY_EVERY == 0 else INSTANCE
            response = session.post(
                f"{shown['production_url']}/predict", json={"instances": [row]}, timeout=10
            )
            answers.add((response.status_code, response.json()["model"]["version"]))
    assert answers == {(200, 1)}

    def comparisons() -> list[dict[str, Any]]:
        # Before the candidate first answered, a record cannot name its version.
        found: list[dict[str, Any]] = stack.json("shadow", "report")["comparisons"]
        return [c for c in found if c["production"] == 1 and c["candidate"] in (2, None)]

    def counted() -> bool:
        return sum(c["mirrored"] + c["dropped"] for c in comparisons()) >= REQUESTS * 0.95

    # A worker mirrors once its sender read the rate (its first requests go unmirrored);
    # its last records are written BATCH_SECONDS after the batch before.
    assert wait_until(counted, STATE_DEADLINE_S, 1.0), comparisons()
    [found] = [c for c in comparisons() if c["candidate"] == 2]
    assert found["mirrored"] > REQUESTS / 2
    assert 0 < found["errors"] <= REQUESTS / FAULTY_EVERY
    assert 0.0 <= found["agreement"] <= 1.0
    assert found["probability_mad"] is not None
    assert 0 < found["production_p50_ms"] <= found["production_p99_ms"]
    assert 0 < found["candidate_p50_ms"] <= found["candidate_p99_ms"]


@pytest.mark.fault
def test_a_breaching_canary_on_the_stack_rolls_back_and_a_healthy_one_reaches_100(
    stack: Stack,
) -> None:
    shown = _production(stack)
    assert (shown["aliases"]["production"], shown["aliases"]["staging"]) == (1, 2)
    url, v1_revision = shown["production_url"], _service(stack)["latestReadyRevision"]
    traffic = Traffic(url)
    traffic.thread.start()
    try:
        assert wait_until(lambda: len(traffic.answers) >= 5, STATE_DEADLINE_S)
        proposal = _propose(stack, "v2")
        v2_start = time.monotonic()
        failed = Stack(stack.home, {**stack.env, "MODELRAIL_ACTOR": "bo"}, 0, "", 0.0).modelrail(
            "approve", proposal, "--reason", "ok", check=False
        )
        v2_end = time.monotonic()

        assert failed.returncode != 0, failed.stdout
        assert "its rollout failed" in failed.stderr + failed.stdout
        [*_, v2] = _history(stack)
        assert (v2["proposal"]["version"], v2["outcome"]["status"]) == (2, "failed")
        [step] = v2["outcome"]["steps"]
        assert step["percent"] == 10.0
        assert "error rate" in step["breach"]
        assert step["new"]["errors"] > 0
        assert step["old"]["errors"] == 0
        shown = _production(stack)
        assert (shown["aliases"]["production"], shown["production_served"]["version"]) == (1, 1)
        assert _all_traffic_on(stack) == v1_revision.rsplit("/", 1)[-1]

        stack.modelrail("retrain", "--request-id", "third")
        assert wait_until(lambda: _deployed(stack, 3), PIPELINE_TIMEOUT_S, 1.0), stack.runs()
        proposal = _propose(stack, "v3")
        v3_start = time.monotonic()
        approved = _as(stack, "bo", "approve", proposal, "--reason", "ok")
        v3_end = time.monotonic()
        assert "production moved from v1 to v3" in approved, approved
        assert wait_until(lambda: len(traffic.between(v3_end, float("inf"))) >= 5, 60.0)
    finally:
        traffic.stop.set()
        traffic.thread.join(timeout=30)

    [*_, v3] = _history(stack)
    assert v3["outcome"]["status"] == "succeeded"
    assert [s["percent"] for s in v3["outcome"]["steps"]] == [10.0, 100.0]
    judged = v3["outcome"]["steps"][0]
    assert judged["breach"] is None
    assert judged["new"]["requests"] >= 20
    shown = _production(stack)
    assert (shown["aliases"]["production"], shown["production_served"]["version"]) == (3, 3)
    assert _all_traffic_on(stack) == v3["outcome"]["revision"]
    assert shown["production_url"] == url  # the same service, a new revision
    _every_answer_names_what_served(traffic, (v2_start, v2_end), (v3_start, v3_end))
