"""The CLI and the UI read every record the code can write: each kind of failure, with
the details its raiser gives (a smoke test's problems as strings included), a record
written before problems had one shape, a deployed run. Nothing of theirs answers 500
or crashes on a record modelrail wrote itself."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from modelrail.composition.bootstrap import bootstrap
from modelrail.domain.lineage import Lineage
from modelrail.domain.runs import Began, StageRecord
from modelrail.entry import cli
from modelrail.kernel import errors
from modelrail.kernel.events import utcnow
from modelrail.service import pipeline
from modelrail.service.container import Container
from modelrail.settings.process import Settings
from modelrail.ui import create_app
from tests.conftest import installed, settings_env
from tests.fakes import FakeDeployer


def _kinds() -> list[type[errors.PermanentError]]:
    found, todo = [], [errors.PermanentError]
    while todo:
        kind = todo.pop()
        found.append(kind)
        todo.extend(kind.__subclasses__())
    return found


# The details each raiser gives (the shapes stored under ``error.details``).
DETAILS: dict[str, dict[str, object]] = {
    "deployment_failed": {
        "url": "http://127.0.0.1:1",
        "problems": ["/readyz answered 503", "/predict answered 500: b'<html>'"],
    },
    "contract_violation": {
        "report_uri": "gs://artifacts/runs/r/reports/validation.json",
        "problems": [{"check": "missing_column", "message": "column 'x' is missing"}],
    },
    "gate_rejected": {"verdict": {"blessed": False, "reasons": ["accuracy 0.5 < min 0.9"]}},
    "data_drift": {"drift": [{"column": "x", "psi": 0.9}], "reasons": ["x drifted"]},
    "retries_exhausted": {"attempts": 5, "last_error": "TransientError"},
    "stuck": {"waited_s": 200, "limit_s": 140, "orphaned_version": 3},
}


@pytest.fixture
def container(tmp_path: Path) -> Container:
    settings = Settings.from_env(settings_env(tmp_path / "home"))
    return installed(bootstrap(settings, deployer_factory=lambda _model: FakeDeployer()))


def write_failure_shapes(container: Container, prefix: str = "0" * 16) -> list[str]:
    """A failed run of every kind of failure, with the details its raiser gives, and one
    written before problems had one shape (a smoke test's problems as bare strings);
    their run ids (``run-<prefix><4 characters>``)."""
    runs = []
    for index, kind in enumerate(_kinds()):
        run_id = f"run-{prefix}{index:04d}"
        exc = kind(f"{kind.kind} happened", DETAILS.get(kind.kind, {}))
        lineage = {
            "trigger": {"kind": "retrain", "key": f"request:{prefix}-{index}"},
            "config": container.config.summary(),
        }
        pipeline.record_failure(container, "deploy", run_id, lineage, "cause", exc, Began.now())
        runs.append(run_id)
    legacy = f"run-{prefix}eeee"
    container.runs.save_stage(
        StageRecord(
            legacy, "deploy", "failed", utcnow(), utcnow(), 0.1,
            Lineage({"kind": "retrain", "key": "legacy"}, container.config.summary()), {}, None,
            {"kind": "deployment_failed", "message": "smoke test failed",
             "details": {"problems": ["/readyz answered 503"], "url": "http://x"}},
        )
    )  # fmt: skip
    return [*runs, legacy]


def _write_every_shape(container: Container, penguins_csv: bytes) -> list[str]:
    runs = write_failure_shapes(container)
    store = container.storage.bucket(container.settings.data_bucket)
    generation = store.write("uploads/penguins/penguins.csv", penguins_csv)
    upload = {
        "bucket": store.bucket,
        "name": "uploads/penguins/penguins.csv",
        "generation": generation,
    }
    container.bus.publish("data-uploaded", orjson.dumps(upload), {})
    container.bus.drain()
    return runs


@pytest.mark.fault
def test_the_cli_and_the_ui_read_every_record_shape(
    container: Container, penguins_csv: bytes
) -> None:
    failed = _write_every_shape(container, penguins_csv)
    summaries = container.runs.runs()
    assert len(summaries) == len(failed) + 1
    assert [s.outcome for s in summaries].count("deployed") == 1

    smoke = next(
        s for s in summaries if s.run_id == failed[_kinds().index(errors.DeploymentFailed)]
    )
    assert smoke.failure is not None
    assert smoke.failure["reasons"] == [
        "[smoke_test] /readyz answered 503",
        "[smoke_test] /predict answered 500: b'<html>'",
    ]
    record = container.runs.stage_record(smoke.run_id, "deploy")
    assert record is not None
    assert record.error is not None
    assert record.error["details"]["problems"][0] == {
        "check": "smoke_test",
        "message": "/readyz answered 503",
    }

    env = settings_env(container.settings.home)
    runner = CliRunner()
    for args in (["runs"], ["runs", "--json"], *(["runs", run] for run in failed)):
        result = runner.invoke(cli.main, args, env=env)
        assert result.exit_code == 0, (args, result.output, result.exception)
    listed = orjson.loads(runner.invoke(cli.main, ["runs", "--json"], env=env).output)
    assert len(listed) == len(summaries)

    client = create_app(container).test_client()
    for path in ("/", *(f"/runs/{run}" for run in failed), "/models"):
        response = client.get(path)
        assert response.status_code == 200, path
    assert b"/readyz answered 503" in client.get(f"/runs/{smoke.run_id}").data
