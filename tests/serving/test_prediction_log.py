"""The prediction log: sampled requests and answers reach the artifact bucket off the
request path, a refused request without its body, and a full queue or a failing bucket
costs records, counted, never an answer."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from modelrail.adapters.local.filesystem import FilesystemStore
from modelrail.domain.lineage import Lineage
from modelrail.domain.predictions import prefix
from modelrail.domain.registry import Registry
from modelrail.serving.prediction_log import PredictionLog
from modelrail.settings.service import ServiceSettings
from tests.conftest import STATE_DEADLINE_S
from tests.manifests import describe
from tests.serving.conftest import BUCKET, MODEL, RegisteredModels


def _version_logging_at(models: RegisteredModels, root: Path, rate: float | None) -> Any:
    """A bucket holding version 1 of the penguins model, trained under a configuration
    whose log rate is ``rate`` (None: a version registered before it was recorded)."""
    store = FilesystemStore(root, BUCKET)
    config: dict[str, Any] = {"hash": "0" * 64, "model": MODEL}
    if rate is not None:
        config["log_rate"] = rate
    booster = models.boosters[1]
    Registry(store, signer=models.signer).register(
        MODEL,
        "run-logged",
        lambda _version: {"model.txt": booster.model_to_string().encode()},
        describe(
            MODEL,
            "run-logged",
            features=models.schema.to_dict(),
            best_iteration=booster.current_iteration(),
            lineage=Lineage(trigger={"kind": "unknown", "key": "run-logged"}, config=config),
        ),
    )
    return store


def _app(models: RegisteredModels, store: Any, **settings: Any) -> Any:
    from modelrail.serving.app import create_app

    return create_app(
        {
            "store": store,
            "signer": models.signer,
            "model_name": MODEL,
            "model_version": 1,
            **settings,
        }
    )


def _lines(store: Any, version: int = 1) -> list[dict[str, Any]]:
    keys = sorted(blob.key for blob in store.list(prefix(MODEL, version)))
    return [orjson.loads(line) for key in keys for line in store.read(key).data.splitlines()]


def test_every_sampled_request_is_logged_with_its_answer_and_a_refusal_without_its_body(
    models: RegisteredModels, tmp_path: Path
) -> None:
    store = _version_logging_at(models, tmp_path, 1.0)
    app = _app(models, store)
    client = app.test_client()
    records = models.records[:3]
    answered = client.post(
        "/predict", json={"instances": records}, headers={"X-Request-Id": "answered-1"}
    )
    refused = client.post(
        "/predict",
        json={"instances": [{**records[0], "body_mass_g": "a secret note"}]},
        headers={"X-Request-Id": "refused-1"},
    )
    assert (answered.status_code, refused.status_code) == (200, 422)
    app.state.log.close()

    lines = {line["request_id"]: line for line in _lines(store)}
    assert set(lines) == {"answered-1", "refused-1"}
    logged = lines["answered-1"]
    assert logged["status"] == 200
    expected = models.schema.encode_records(records)
    np.testing.assert_array_equal(np.array(logged["instances"], dtype=np.float64), expected)
    assert logged["predictions"] == answered.get_json()["predictions"]
    assert lines["refused-1"] == {
        "time": lines["refused-1"]["time"],
        "request_id": "refused-1",
        "status": 422,
        "problem": "invalid-instances",
        "errors": 1,
    }
    assert b"a secret note" not in b"".join(
        store.read(blob.key).data for blob in store.list(prefix(MODEL, 1))
    )
    assert (app.state.log.logged, app.state.log.dropped, app.state.log.failed) == (2, 0, 0)


def test_each_line_names_the_service_that_answered(
    models: RegisteredModels, tmp_path: Path
) -> None:
    """One version may serve on staging and on production at once: a canary's
    judgement reads production's lines alone. The name is Cloud Run's ``K_SERVICE``
    unless the deployer gave one (``MODELRAIL_SERVICE_NAME``)."""
    store = _version_logging_at(models, tmp_path, 1.0)
    app = _app(models, store, service_name="modelrail-production-penguins")
    assert (
        app.test_client().post("/predict", json={"instances": models.records[:2]}).status_code
        == 200
    )
    app.state.log.close()

    assert [line["service"] for line in _lines(store)] == ["modelrail-production-penguins"]
    cloud = {"MODELRAIL_MODEL_VERSION": "1", "K_SERVICE": "modelrail-staging-penguins"}
    assert ServiceSettings.from_env(cloud).service_name == "modelrail-staging-penguins"
    named = {**cloud, "MODELRAIL_SERVICE_NAME": "modelrail-production-penguins"}
    assert ServiceSettings.from_env(named).service_name == "modelrail-production-penguins"


def test_a_missing_value_is_null_and_an_unseen_category_is_counted_not_kept(
    models: RegisteredModels, tmp_path: Path
) -> None:
    store = _version_logging_at(models, tmp_path, 1.0)
    app = _app(models, store)
    rows = [
        {**models.records[0], "sex": None},
        {**models.records[1], "island": "Atlantis"},
        {**models.records[2], "island": "Lemuria"},
    ]
    assert app.test_client().post("/predict", json={"instances": rows}).status_code == 200
    app.state.log.close()
    [line] = _lines(store)
    sex, island = models.schema.names.index("sex"), models.schema.names.index("island")
    assert line["instances"][0][sex] is None
    assert [row[island] for row in line["instances"][1:]] == [None, None]
    assert line["unseen"] == {"island": 2}
    assert b"Atlantis" not in store.read(store.list(prefix(MODEL, 1))[0].key).data


def test_a_version_at_rate_zero_logs_nothing_and_an_older_one_logs_at_the_default(
    models: RegisteredModels, tmp_path: Path
) -> None:
    from modelrail.domain.lineage import DEFAULT_LOG_RATE

    assert _app(models, _version_logging_at(models, tmp_path / "off", 0.0)).state.log is None
    older = _app(models, _version_logging_at(models, tmp_path / "older", None)).state.log
    assert older is not None
    assert older.rate == DEFAULT_LOG_RATE


def test_a_full_queue_drops_and_counts_and_never_waits() -> None:
    entered, release = threading.Event(), threading.Event()
    written: list[str] = []

    def slow_write(key: str, data: bytes) -> None:
        entered.set()
        release.wait(STATE_DEADLINE_S)
        written.append(key)

    log = PredictionLog(slow_write, model=MODEL, version=1, rate=1.0, capacity=2, batch_records=1)
    matrix = np.zeros((1, 2))
    log.answered("first", matrix, [1.0], {})
    assert entered.wait(STATE_DEADLINE_S), "the writer never took the first record"
    # The writer is stuck in the bucket: two records wait, three more are dropped, and
    # none of these calls waits for the writer.
    for n in range(5):
        log.answered(f"later-{n}", matrix, [1.0], {})
    assert log.dropped == 3
    release.set()
    log.close()
    assert (log.logged, log.dropped, log.failed) == (3, 3, 0)
    assert len(written) == 3


def test_a_failing_bucket_costs_the_records_not_the_answer(
    models: RegisteredModels, tmp_path: Path
) -> None:
    store = _version_logging_at(models, tmp_path, 1.0)
    app = _app(models, store)

    def broken(key: str, data: bytes) -> None:
        raise OSError("the bucket is unreachable")

    app.state.log._write = broken
    response = app.test_client().post("/predict", json={"instances": models.records[:2]})
    assert response.status_code == 200
    app.state.log.close()
    assert (app.state.log.logged, app.state.log.failed) == (0, 1)


@pytest.mark.parametrize("batch_records", [1, 2])
def test_each_batch_is_one_object_of_json_lines(batch_records: int) -> None:
    objects: dict[str, bytes] = {}
    log = PredictionLog(
        objects.__setitem__,
        model=MODEL,
        version=7,
        rate=1.0,
        batch_records=batch_records,
        batch_seconds=60.0,
    )
    for n in range(4):
        log.refused(f"r{n}", 422, "invalid-instances", 1)
    log.close()
    assert len(objects) == 4 // batch_records
    assert all(key.startswith(f"predictions/{MODEL}/v7/") for key in objects)
    ids = [
        orjson.loads(line)["request_id"]
        for key in sorted(objects)
        for line in objects[key].splitlines()
    ]
    assert ids == ["r0", "r1", "r2", "r3"]


def test_full_batches_are_written_as_they_fill_and_the_rest_once_an_interval_passed() -> None:
    """A busy worker writes one object per full batch, not one per few requests; what
    is left waits for the interval (or for the worker to stop)."""
    objects: dict[str, bytes] = {}
    log = PredictionLog(
        objects.__setitem__, model=MODEL, version=1, rate=1.0, batch_records=10,
        batch_seconds=5.0,
    )  # fmt: skip
    start = log._written_at
    for n in range(25):
        log._pending.append(b'{"request_id": "r%d"}\n' % n)

    def sizes() -> list[int]:
        return [len(objects[key].splitlines()) for key in sorted(objects)]

    log._write_due(start + 1.0, everything=False)
    assert sizes() == [10, 10]  # the five left are not yet due
    log._write_due(start + 6.0, everything=False)
    assert sizes() == [10, 10, 5]  # an interval after the last write
    for n in range(3):
        log._pending.append(b'{"request_id": "s%d"}\n' % n)
    log._write_due(start + 7.0, everything=False)
    assert sizes() == [10, 10, 5]  # just written: these wait
    log._write_due(start + 7.0, everything=True)  # the worker stops
    assert sizes() == [10, 10, 5, 3]
