"""Path and URI errors in events are permanent: refused on the first delivery as
``invalid_event`` (or ``data_unavailable`` for a bucket that is not ours), never
retried five times into ``retries_exhausted``."""

from __future__ import annotations

import orjson
import pytest

from modelrail.kernel.events import DataUploaded
from tests.unit.conftest import Harness


@pytest.mark.fault
@pytest.mark.parametrize(
    ("data_uri", "kind"),
    [
        ("gs://{bucket}/uploads/penguins/../../etc/passwd.csv", "invalid_event"),
        ("gs://{bucket}/../outside.csv", "invalid_event"),
        ("gs://{bucket}//etc/passwd.csv", "invalid_event"),
        ("gs://{bucket}/uploads/penguins/./data.csv", "invalid_event"),
        ("gs://{bucket}/uploads/penguins/a\x00b.csv", "invalid_event"),
        ("gs://{bucket}/" + "x" * 2000 + ".csv", "invalid_event"),
        ("gs://../uploads/penguins/data.csv", "invalid_event"),
        ("gs://Not_A_Bucket!/data.csv", "invalid_event"),
        ("gs://someone-elses-bucket/data.csv", "data_unavailable"),
    ],
    ids=[
        "dot-dot",
        "above-the-bucket",
        "leading-slash",
        "dot",
        "nul",
        "too-long",
        "dot-dot-bucket",
        "invalid-bucket",
        "foreign-bucket",
    ],
)
def test_a_retrain_naming_an_impossible_object_is_refused_on_its_first_delivery(
    harness: Harness, data_uri: str, kind: str
) -> None:
    uri = data_uri.format(bucket=harness.container.settings.data_bucket)

    harness.retrain(request_id="hostile", data_uri=uri)
    harness.run()

    [run] = harness.runs()
    assert run.failure is not None
    assert (run.failure["stage"], run.failure["kind"]) == ("validate", kind)
    assert harness.clock.slept == []  # no redelivery: refused at once
    assert len(run.failure["message"]) < 600
    [failed] = harness.published("pipeline-failed")
    assert failed["error"]["kind"] == kind


@pytest.mark.fault
def test_an_upload_notification_naming_a_path_outside_its_bucket_is_refused_at_once(
    harness: Harness,
) -> None:
    event = DataUploaded(
        bucket=harness.container.settings.data_bucket,
        name="uploads/penguins/../../x.csv",
        generation=1,
    )
    harness.bus.publish("data-uploaded", orjson.dumps(event.to_body()), {})
    harness.run()

    [run] = harness.runs()
    assert run.failure is not None
    assert run.failure["kind"] == "invalid_event"
    assert harness.clock.slept == []
