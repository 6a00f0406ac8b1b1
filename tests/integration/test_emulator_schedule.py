"""A model's [retrain] schedule on the emulator stack: `modelrail sweep --at`, the
operator's way to replay a time the sweeps missed, moves the clock the schedule is
judged by (never past now), and the sweep fires the retrain through the Pub/Sub
emulator; the run that starts says its trigger was the schedule, and is served."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from modelrail.kernel.processes import wait_until
from tests.conftest import REPO, STATE_DEADLINE_S
from tests.integration.test_emulator_stack import (
    MODELRAIL,
    PIPELINE_TIMEOUT_S,
    Stack,
    running_stack,
)

pytestmark = [pytest.mark.emulator, pytest.mark.xdist_group("emulators")]

SCHEDULE = "0 3 * * *"  # every day at 03:00 UTC


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("schedule-stack")
    config = home / "definition"
    contract = Path("schemas") / "datasets" / "penguins.json"
    (config / contract).parent.mkdir(parents=True)
    shutil.copy(REPO / contract, config / contract)
    pipeline = (REPO / "pipeline.toml").read_text()
    (config / "pipeline.toml").write_text(f'{pipeline}\n[retrain]\nschedule = "{SCHEDULE}"\n')
    with running_stack(home, models=(config / "pipeline.toml",)) as started:
        started.upload_penguins()
        yield started


def _sweep(stack: Stack, at: datetime) -> subprocess.CompletedProcess[str]:
    """`modelrail sweep --at AT` with the stack's environment exported, as an operator
    replaying a missed time would type it."""
    return subprocess.run(
        [str(MODELRAIL), "sweep", "--at", f"{at:%Y-%m-%dT%H:%M:%S}"],
        env={**stack.env, **stack.state()["env"]},
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


def _scheduled(stack: Stack) -> list[dict[str, Any]]:
    return [run for run in stack.runs() if run["trigger"].get("kind") == "schedule"]


def test_a_schedule_fires_a_retrain_through_the_real_sweep(stack: Stack) -> None:
    # Three days ago the schedule is seen for the first time: it counts from then on.
    first_seen = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    assert "scheduled retrain" not in _sweep(stack, first_seen).stdout
    slot = first_seen.replace(hour=3, minute=0, second=0)
    if slot > first_seen:
        slot -= timedelta(days=1)
    # Five minutes past the next 03:00, a sweep fires it, once however many sweeps see it.
    fires_at = slot + timedelta(days=1, minutes=5)
    request_id = f"schedule:penguins:{fires_at:%Y%m%dT0300Z}"

    fired = _sweep(stack, fires_at).stdout
    again = _sweep(stack, fires_at + timedelta(minutes=10)).stdout

    assert f"scheduled retrain of penguins ({SCHEDULE}, " in fired
    assert request_id in fired
    assert "scheduled retrain" not in again
    assert wait_until(
        lambda: [r["outcome"] for r in _scheduled(stack)] == ["deployed"],
        PIPELINE_TIMEOUT_S,
        1.0,
    ), stack.runs()
    [run] = _scheduled(stack)
    assert run["trigger"]["key"] == f"request:{request_id}"
    assert f"the schedule '{SCHEDULE}' (UTC)" in run["trigger"]["reason"]
    assert wait_until(lambda: stack.served_version() == 2, STATE_DEADLINE_S, 0.5)


def test_the_sweep_will_not_judge_a_schedule_ahead_of_the_clock(stack: Stack) -> None:
    ahead = _sweep(stack, datetime.now(UTC) + timedelta(days=1))

    assert ahead.returncode == 2
    assert "is later than now: a schedule fires when its time has come" in ahead.stderr
    assert len(_scheduled(stack)) <= 1
