"""Production on the emulator stack: each model's production service
(``modelrail-production-<model>``) on the local Cloud Run control plane. v1 is proposed
and approved with the CLI (carried out at once, as locally); v2 is approved the cloud's
way, the approval written only, and the sweep carries it out on Cloud Run's API.
Traffic runs throughout, and every answer names a version the records say was serving
then."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from modelrail.composition.bootstrap import bootstrap
from modelrail.domain.promotion import Promotions
from modelrail.kernel.processes import wait_until
from modelrail.localcloud.emulators import free_port
from modelrail.service.promotion import approve
from modelrail.settings.process import Settings
from tests.conftest import PENGUINS
from tests.e2e.test_canary import Traffic
from tests.integration.test_emulator_stack import PIPELINE_TIMEOUT_S, Stack, running_stack

pytestmark = [pytest.mark.emulator, pytest.mark.xdist_group("emulators")]

MODEL = "penguins"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("production-stack")
    with running_stack(home, MODELRAIL_PRODUCTION_PORT=str(free_port())) as started:
        started.env = {**started.env, **started.state()["env"]}
        bucket = started.env.get("MODELRAIL_DATA_BUCKET", "modelrail-data")
        started.gcloud("storage", "cp", str(PENGUINS), f"gs://{bucket}/uploads/{MODEL}/p.csv")
        assert wait_until(lambda: _deployed(started, 1), PIPELINE_TIMEOUT_S, 1.0), started.runs()
        yield started


def _deployed(stack: Stack, count: int) -> bool:
    return sum(run["outcome"] == "deployed" for run in stack.runs()) >= count


def _as(stack: Stack, actor: str, *args: str) -> str:
    result = Stack(stack.home, {**stack.env, "MODELRAIL_ACTOR": actor}, 0, "", 0.0).modelrail(
        *args, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _propose(stack: Stack, reason: str) -> str:
    said = _as(stack, "ana", "promote", "--reason", reason)
    found = re.match(r"proposal (\w+):", said)
    assert found, said
    return found.group(1)


def _production(stack: Stack) -> dict[str, Any]:
    [model] = stack.json("models")
    return dict(model)


def test_production_is_promoted_with_approval_on_cloud_run(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _production(stack)["production_url"] is None  # nothing promoted yet

    proposal = _propose(stack, "v1 to production")
    approved = _as(stack, "bo", "approve", proposal, "--reason", "looks right")

    assert "production moved from nothing to v1" in approved, approved
    shown = _production(stack)
    url = shown["production_url"]
    assert url
    assert url != shown["staging_url"]
    assert shown["production_served"]["version"] == 1
    traffic = Traffic(url)
    traffic.thread.start()
    try:
        stack.modelrail("retrain", "--request-id", "second")
        assert wait_until(lambda: _deployed(stack, 2), PIPELINE_TIMEOUT_S, 1.0), stack.runs()
        second = _propose(stack, "v2 to production")
        # The cloud's way: the approver writes the approval only ...
        for name, value in stack.state()["env"].items():  # the Google clients read these
            monkeypatch.setenv(name, value)
        container = bootstrap(Settings.from_env(stack.env)).for_model(MODEL)
        assert approve(container, second, reason="ok", approved_by="bo", carry=False) is None
        assert _production(stack)["production_served"]["version"] == 1
        # ... and the sweep carries it out.
        started = time.monotonic()
        swept = stack.modelrail("sweep").stdout
        ended = time.monotonic()
        assert f"production promotion {second} succeeded" in swept, swept
        assert wait_until(lambda: len(traffic.between(ended, float("inf"))) >= 5, 60.0)
    finally:
        traffic.stop.set()
        traffic.thread.join(timeout=30)

    shown = _production(stack)
    assert (shown["aliases"]["production"], shown["production_served"]["version"]) == (2, 2)
    assert shown["production_url"] == url  # the same service, a new revision
    [*_, outcome] = Promotions(container.artifacts).history(MODEL)
    assert outcome["outcome"]["status"] == "succeeded"
    assert outcome["outcome"]["revision"].startswith(f"modelrail-production-{MODEL}-")
    for answers, versions in (
        (traffic.between(0, started), {1}),
        (traffic.between(started, ended), {1, 2}),
        (traffic.between(ended, float("inf")), {2}),
    ):
        assert answers
        assert {status for _, status, _ in answers} == {200}
        assert {version for _, _, version in answers} <= versions
