"""Notifications on the emulator stack: the notifier runs as its own functions-framework
process, fed by its push subscriptions on the Pub/Sub emulator, its webhook URLs in the
environment `modelrail up --emulators` was given. An upload's deploy reaches a receiver
of the test's own; a webhook answering 500 is retried with the notifier's backoff (the
emulator does not tell a push endpoint its attempt: the delivery record counts them),
recorded failed on the last attempt and acknowledged, and the run is deployed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from modelrail.adapters.by_mode import open_artifact_store
from modelrail.kernel.processes import wait_until
from modelrail.settings.process import Settings
from tests.conftest import PENGUINS, REPO
from tests.e2e.test_notify import NOTIFY, Receiver
from tests.integration.test_emulator_stack import PIPELINE_TIMEOUT_S, Stack, running_stack

pytestmark = [pytest.mark.emulator, pytest.mark.xdist_group("emulators")]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver.running() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("notify-stack")
    text = (REPO / "pipeline.toml").read_text()
    text = text.replace('contract = "schemas/', f'contract = "{REPO}/schemas/', 1) + NOTIFY
    (home / "pipeline.toml").write_text(text)
    with running_stack(
        home,
        models=(home / "pipeline.toml",),
        MODELRAIL_WEBHOOK_TEAM=receiver.url("/team"),
        MODELRAIL_WEBHOOK_BROKEN=receiver.url("/broken"),
    ) as started:
        yield started


def _deliveries(stack: Stack, webhook: str) -> list[dict[str, Any]]:
    """The webhook's delivery records, read from fake-gcs-server as the stack's own
    processes read the artifact bucket."""
    env = {**stack.env, **stack.state()["env"]}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", env["STORAGE_EMULATOR_HOST"])
        store = open_artifact_store(Settings.from_env(env))
        return [
            orjson.loads(store.read(info.key).data)
            for info in store.list("notifications/")
            if info.key.endswith(f"/{webhook}.json")
        ]


def _failed_for_good(stack: Stack) -> bool:
    return any(d["status"] == "failed" for d in _deliveries(stack, "broken"))


def test_a_deploy_reaches_the_webhook_and_a_broken_one_is_recorded_failed(
    stack: Stack, receiver: Receiver
) -> None:
    bucket = stack.env.get("MODELRAIL_DATA_BUCKET", "modelrail-data")
    stack.gcloud("storage", "cp", str(PENGUINS), f"gs://{bucket}/uploads/penguins/p.csv")

    assert wait_until(lambda: bool(receiver.bodies["/team"]), PIPELINE_TIMEOUT_S, 0.5)
    assert wait_until(lambda: _failed_for_good(stack), PIPELINE_TIMEOUT_S, 0.5), (
        _deliveries(stack, "broken"),
        len(receiver.bodies["/broken"]),
    )

    [run] = stack.runs()
    assert run["outcome"] == "deployed"
    [told] = receiver.bodies["/team"]
    assert told["text"].startswith(
        f"modelrail penguins v1: deployed to staging (run {run['run_id']})"
    )
    [failed] = _deliveries(stack, "broken")
    assert (failed["status"], failed["attempts"], failed["error"]) == ("failed", 5, "HTTP 500")
    assert len(receiver.bodies["/broken"]) == 5
    assert stack.pull_dead_letters() == []
