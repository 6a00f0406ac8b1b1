"""The one logging setup: Cloud Logging JSON on Google Cloud, text elsewhere, run and stage
on every line a stage writes."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest

from modelrail.entry import train_job as train
from modelrail.kernel import logs

log = logging.getLogger("modelrail.test")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    logger = logging.getLogger(logs.ROOT_LOGGER)
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


def test_locally_lines_are_text_with_stage_and_run(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(environ={})

    with logs.pipeline_context(stage="validate"):
        logs.bind(run_id="run-1")
        log.info("checked 344 rows")
    log.info("after the stage")

    inside, after = capsys.readouterr().err.splitlines()
    assert inside.endswith("INFO modelrail.test [validate run-1]: checked 344 rows")
    assert after.endswith("INFO modelrail.test: after the stage")


@pytest.mark.parametrize("marker", logs.GOOGLE_CLOUD_MARKERS)
def test_on_google_cloud_lines_are_cloud_logging_json(
    marker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure(environ={marker: "modelrail-train"})

    with logs.pipeline_context(stage="train", run_id="run-2"):
        log.warning("early stop at %d rounds", 40, extra={"fields": {"rounds": 40}})
    log.error("outside any stage")

    inside, after = (orjson.loads(line) for line in capsys.readouterr().err.splitlines())
    assert inside["severity"] == "WARNING"
    assert inside["message"] == "early stop at 40 rounds"
    assert (inside["run_id"], inside["stage"], inside["rounds"]) == ("run-2", "train", 40)
    assert inside["time"].endswith("Z")
    assert after["severity"] == "ERROR"
    assert "run_id" not in after
    assert "stage" not in after


def test_configure_keeps_one_handler_and_follows_the_platform() -> None:
    logger = logging.getLogger(logs.ROOT_LOGGER)

    logs.configure(environ={})
    logs.configure(environ={})
    [text] = [h for h in logger.handlers if isinstance(h, logs.StderrHandler)]
    logs.configure(environ={"K_SERVICE": "modelrail-staging"})
    [cloud] = [h for h in logger.handlers if isinstance(h, logs.StderrHandler)]

    assert isinstance(text.formatter, logs.TextFormatter)
    assert isinstance(cloud.formatter, logs.CloudLoggingFormatter)


def test_the_training_job_logs_json_on_cloud_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLOUD_RUN_JOB", "modelrail-train")
    monkeypatch.delenv("MODELRAIL_EVENT", raising=False)

    assert train.main() == 2

    [line] = (orjson.loads(line) for line in capsys.readouterr().err.splitlines())
    assert line["severity"] == "ERROR"
    assert "MODELRAIL_EVENT is empty" in line["message"]
