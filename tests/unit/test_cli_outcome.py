"""The CLI's exit status tells a run that did not end from one that did."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from click.testing import CliRunner

from modelrail.adapters.local import inprocess
from modelrail.composition.bootstrap import bootstrap
from modelrail.domain.runs import RunLog, RunSummary, StageRecord
from modelrail.entry import cli
from modelrail.kernel.events import DataUploaded
from modelrail.kernel.ports import Message
from modelrail.service import pipeline
from modelrail.service.container import Container
from tests.conftest import PENGUINS, install, installed, settings_env
from tests.fakes import FakeDeployer
from tests.unit.conftest import ManualClock


@pytest.mark.fault
def test_an_upload_whose_run_cannot_be_recorded_exits_non_zero_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_stage = RunLog.save_stage

    def disk_full_at_register(self: RunLog, record: StageRecord) -> StageRecord:
        if record.stage == "register":
            raise OSError(28, "No space left on device")
        return save_stage(self, record)

    monkeypatch.setattr(RunLog, "save_stage", disk_full_at_register)
    # The CLI's bus waits out Pub/Sub's backoff between the five deliveries (150 s):
    # on a clock that jumps.
    clock = ManualClock()
    monkeypatch.setattr(inprocess, "time", SimpleNamespace(monotonic=clock, sleep=clock.sleep))
    home = tmp_path / "home"
    install(settings_env(home))

    result = CliRunner().invoke(cli.main, ["upload", str(PENGUINS)], env=settings_env(home))

    assert result.exit_code == 1, result.output
    assert "stopped after evaluate" in result.output
    assert str(home / "dead-letter.jsonl") in result.output
    assert (home / "dead-letter.jsonl").read_bytes().count(b"\n") == 1
    assert clock.slept == [10.0, 20.0, 40.0, 80.0]


def _validated_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[cli.Cli, Container, RunSummary]:
    """This command, another process's container over the same state, and a run the
    other has validated and not carried further yet."""
    for name, value in settings_env(tmp_path / "home").items():
        monkeypatch.setenv(name, value)
    install(settings_env(tmp_path / "home"))
    command = cli.Cli(quiet=True)
    settings = command.settings
    command.container = installed(
        bootstrap(settings, deployer_factory=lambda _model: FakeDeployer())
    )
    other = installed(
        bootstrap(settings, deployer_factory=lambda _model: FakeDeployer())
    )  # the other process
    data = other.storage.bucket(settings.data_bucket)
    generation = data.write("uploads/penguins/penguins.csv", PENGUINS.read_bytes())
    upload = DataUploaded(
        bucket=data.bucket, name="uploads/penguins/penguins.csv", generation=generation
    )
    pipeline.consume(other, "validate", Message(orjson.dumps(upload.to_body()), {}))
    [started] = command.container.runs.runs()
    assert started.outcome == "running"
    return command, other, started


@pytest.mark.fault
def test_a_run_another_process_carries_is_waited_for_not_reported_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same request from two commands: this one's deliveries found the stages held
    by the other's and were acknowledged, so its bus is idle while the run goes on."""
    command, other, started = _validated_elsewhere(tmp_path, monkeypatch)
    carrying = threading.Thread(target=other.bus.drain)  # type: ignore[attr-defined]
    carrying.start()
    try:
        cli._report_run(command, started)
    finally:
        carrying.join()

    output = capsys.readouterr().out
    assert f"run {started.run_id} is being carried by another process" in output
    assert f"run {started.run_id}: deployed" in output


def test_a_run_quiet_for_longer_than_a_delivery_holds_is_reported_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A process that died carrying the run: nothing records any more, and the command
    says the run stopped instead of waiting for it."""
    command, _, started = _validated_elsewhere(tmp_path, monkeypatch)
    monkeypatch.setattr(cli, "CARRIED_QUIET_S", -1.0)  # its newest record is already too old

    with pytest.raises(SystemExit) as exited:
        cli._report_run(command, started)

    assert exited.value.code == 1
    output = capsys.readouterr()
    assert "carried by another process" not in output.out
    assert f"run {started.run_id} stopped after validate" in output.err
