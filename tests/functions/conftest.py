"""The real functions-framework apps, in-process, fed the raw Pub/Sub push bodies that
the emulator and the cloud send (``tests/functions/fixtures``)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask.testing import FlaskClient
from functions_framework import create_app

from modelrail.entry import functions
from modelrail.kernel.events import utcnow
from modelrail.service.container import Container
from tests.conftest import REPO, installed, settings_env

FIXTURES = Path(__file__).parent / "fixtures"
PROJECT = "modelrail-local"


# The fixtures' recorded times are placeholders, replaced by the test clock's now: the
# pipeline refuses events older than ``max_event_age_s``, so a body keeping the day it
# was recorded would start failing a day later.


def push_body(data: bytes, attributes: dict[str, str], message_id: str = "1") -> dict[str, Any]:
    """A Pub/Sub push request body, as a push subscription delivers it, published now."""
    template = orjson.loads((FIXTURES / "pubsub_push.json").read_bytes())
    now = utcnow()
    template["message"].update(
        data=base64.b64encode(data).decode(),
        attributes=attributes,
        messageId=message_id,
        publishTime=now,
        publish_time=now,
    )
    return dict(template)


def storage_notification(generation: int) -> dict[str, Any]:
    """A Cloud Storage object-finalize notification payload for ``generation``, now."""
    notification: dict[str, Any] = orjson.loads((FIXTURES / "gcs_notification.json").read_bytes())
    now = utcnow()
    notification.update(generation=str(generation), timeCreated=now, updated=now)
    return notification


@pytest.fixture
def container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Container]:
    for name, value in settings_env(tmp_path / "home").items():
        monkeypatch.setenv(name, value)
    functions.container.cache_clear()
    container = functions.container()
    installed(container)  # the function's container acts for whichever model an event names
    yield container
    functions.container.cache_clear()


@pytest.fixture
def function_client() -> Callable[[str], FlaskClient]:
    def client(stage: str) -> FlaskClient:
        source = REPO / "functions" / stage / "main.py"
        return create_app(
            target="handle", source=str(source), signature_type="cloudevent"
        ).test_client()

    return client
