"""Each Cloud Function, built by functions-framework and posted a raw Pub/Sub push."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import time_machine
from flask.testing import FlaskClient

from modelrail.adapters.local.inprocess import InProcessBus
from modelrail.entry import functions
from modelrail.kernel.ports import Message
from modelrail.service.container import Container
from tests.conftest import PENGUINS
from tests.functions.conftest import PROJECT, push_body, storage_notification

Client = Callable[[str], FlaskClient]


def _upload(container: Container) -> tuple[bytes, dict[str, str]]:
    """Put the dataset in the data bucket and return its GCS notification."""
    store = container.storage.bucket(container.settings.data_bucket)
    generation = store.write("uploads/penguins/penguins.csv", PENGUINS.read_bytes())
    notification = storage_notification(generation)
    attributes = {
        "eventType": "OBJECT_FINALIZE",
        "payloadFormat": "JSON_API_V1",
        "bucketId": store.bucket,
        "objectId": "uploads/penguins/penguins.csv",
        "objectGeneration": str(generation),
    }
    return orjson.dumps(notification), attributes


def _published(container: Container, topic: str) -> list[tuple[bytes, dict[str, str]]]:
    bus = container.bus
    assert isinstance(bus, InProcessBus)
    return [(m.data, dict(m.attributes)) for t, m in bus.history if t == topic]


def _post(client: FlaskClient, topic: str, data: bytes, attributes: dict[str, str]) -> int:
    response = client.post(
        f"/projects/{PROJECT}/topics/{topic}",
        json=push_body(data, attributes),
        headers={"Content-Type": "application/json"},
    )
    return response.status_code


def test_validate_accepts_a_storage_notification(
    container: Container, function_client: Client
) -> None:
    data, attributes = _upload(container)

    status = _post(function_client("validate"), "data-uploaded", data, attributes)

    assert status == 200
    [(body, published_attributes)] = _published(container, "dataset-validated")
    event = orjson.loads(body)
    assert event["dataset"]["rows"] == 344
    assert published_attributes["event_type"] == "dataset-validated"
    record = container.runs.stage_record(event["run_id"], "validate")
    assert record is not None
    assert record.status == "succeeded"


def test_the_functions_chain_from_upload_to_registration(
    container: Container, function_client: Client
) -> None:
    data, attributes = _upload(container)
    assert _post(function_client("validate"), "data-uploaded", data, attributes) == 200

    for stage, topic, emits in [
        ("launch_training", "dataset-validated", "model-trained"),
        ("evaluate", "model-trained", "model-evaluated"),
        ("register", "model-evaluated", "model-registered"),
    ]:
        [(body, attrs)] = _published(container, topic)
        assert _post(function_client(stage), topic, body, attrs) == 200, stage
        assert len(_published(container, emits)) == 1, emits

    assert container.registry.versions("penguins") == [1]
    assert container.registry.aliases("penguins") == {"champion": 1}


@pytest.mark.fault
def test_a_redelivered_push_is_acknowledged_without_new_work(
    container: Container, function_client: Client
) -> None:
    data, attributes = _upload(container)
    client = function_client("validate")

    assert _post(client, "data-uploaded", data, attributes) == 200
    assert _post(client, "data-uploaded", data, attributes) == 200

    runs = container.runs.runs()
    assert len(runs) == 1
    first, again = (orjson.loads(body) for body, _ in _published(container, "dataset-validated"))
    assert first == again  # the recorded event re-published, same event_id


def test_a_malformed_message_is_acknowledged_and_reported(
    container: Container, function_client: Client
) -> None:
    status = _post(function_client("validate"), "retrain-requested", b"not json", {})

    assert status == 200  # acknowledged: retrying cannot fix it
    [(body, _)] = _published(container, "pipeline-failed")
    assert orjson.loads(body)["error"]["kind"] == "invalid_event"


@pytest.mark.fault
def test_a_transient_failure_answers_500_so_pubsub_redelivers(
    container: Container, function_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, attributes = _upload(container)

    def unreachable(*args: object, **kwargs: object) -> int:
        raise ConnectionError("artifact bucket unreachable")

    monkeypatch.setattr(container.artifacts, "write", unreachable)

    status = _post(function_client("validate"), "data-uploaded", data, attributes)

    assert status == 500
    assert _published(container, "pipeline-failed") == []


@pytest.mark.fault
def test_a_push_older_than_the_age_limit_ends_its_run_as_too_old(
    container: Container, function_client: Client
) -> None:
    data, attributes = _upload(container)
    limit = container.settings.max_event_age_s
    body = push_body(data, attributes)
    stale = (datetime.now(UTC) - timedelta(seconds=limit + 60)).isoformat()
    body["message"].update(publishTime=stale, publish_time=stale)

    response = function_client("validate").post(
        f"/projects/{PROJECT}/topics/data-uploaded", json=body
    )

    assert response.status_code == 200  # acknowledged: redelivery makes it older still
    [(failed, _)] = _published(container, "pipeline-failed")
    assert orjson.loads(failed)["error"]["kind"] == "event_too_old"
    assert _published(container, "dataset-validated") == []


def test_the_chain_runs_with_the_clock_a_year_ahead(
    container: Container, function_client: Client
) -> None:
    # Nothing in the fixtures may carry the day they were written.
    with time_machine.travel(datetime.now(UTC) + timedelta(days=366), tick=True):
        data, attributes = _upload(container)
        assert _post(function_client("validate"), "data-uploaded", data, attributes) == 200

    [(body, _)] = _published(container, "dataset-validated")
    occurred = datetime.fromisoformat(orjson.loads(body)["occurred_at"])
    assert occurred > datetime.now(UTC) + timedelta(days=365)


@pytest.mark.parametrize(("delivery_attempt", "seen"), [(3, 3), (None, 1)])
def test_the_delivery_attempt_is_read_from_the_push_request(
    container: Container,
    function_client: Client,
    monkeypatch: pytest.MonkeyPatch,
    delivery_attempt: int | None,
    seen: int,
) -> None:
    # functions-framework's CloudEvent keeps only the message: the count Pub/Sub puts at
    # the top of the push body (dead-letter policies) must come from the request itself.
    delivered: list[Message] = []
    monkeypatch.setattr(
        functions.pipeline, "consume", lambda _c, _stage, message: delivered.append(message)
    )
    data, attributes = _upload(container)
    body = push_body(data, attributes)
    if delivery_attempt is not None:
        body["deliveryAttempt"] = delivery_attempt

    response = function_client("validate").post(
        f"/projects/{PROJECT}/topics/data-uploaded", json=body
    )

    assert response.status_code == 200
    [message] = delivered
    assert message.delivery_attempt == seen
    assert message.message_id == body["message"]["messageId"]


def test_on_cloud_run_a_function_logs_cloud_logging_json_with_run_and_stage(
    container: Container,
    function_client: Client,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("K_SERVICE", "modelrail-validate")  # set by Cloud Run for functions
    data, attributes = _upload(container)
    client = function_client("validate")
    capsys.readouterr()

    assert _post(client, "data-uploaded", data, attributes) == 200

    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    [(body, _)] = _published(container, "dataset-validated")
    run_id = orjson.loads(body)["run_id"]
    finished = [line for line in lines if line["message"].startswith("validate succeeded")]
    assert finished, lines
    for line in finished:
        assert line["severity"] == "INFO"
        assert line["run_id"] == run_id
        assert line["stage"] == "validate"
        assert line["time"].endswith("Z")


def test_a_push_on_the_retrain_topic_is_a_retrain_request_without_event_type(
    container: Container, function_client: Client
) -> None:
    data, attributes = _upload(container)
    assert _post(function_client("validate"), "data-uploaded", data, attributes) == 200

    # functions-framework names the topic of the push endpoint's path in the CloudEvent.
    status = _post(function_client("validate"), "retrain-requested", b'{"request_id": "r1"}', {})

    assert status == 200
    assert len(_published(container, "dataset-validated")) == 2
    assert _published(container, "pipeline-failed") == []
