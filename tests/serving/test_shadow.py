"""The shadow mirror: production answers as always while a sampled share of its
requests reaches the candidate off the request path, and the records say where the
two answers agreed; a candidate that is down costs records, never an answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from modelrail.adapters.local.filesystem import FilesystemStore
from modelrail.domain import shadow
from modelrail.domain.models import Definition, Models
from tests.conftest import REPO, STATE_DEADLINE_S, wait_for
from tests.serving.conftest import BUCKET, MODEL, RegisteredModels, free_port

CANDIDATE_VERSION = 7


def _label(row: dict[str, Any]) -> str:
    """The fake candidate's label: Gentoo on Biscoe, Adelie elsewhere."""
    return "Gentoo" if row.get("island") == "Biscoe" else "Adelie"


class _Candidate(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        rows = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))["instances"]
        answers = [{"label": _label(row), "probabilities": {_label(row): 1.0}} for row in rows]
        body = orjson.dumps(
            {"predictions": answers, "model": {"name": MODEL, "version": CANDIDATE_VERSION}}
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def candidate_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Candidate)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _store(models: RegisteredModels, root: Path, shadow_section: str) -> FilesystemStore:
    """The fixture's versions, with the model installed under ``shadow_section``."""
    store = FilesystemStore(root, BUCKET)
    for blob in models.store.list(f"models/{MODEL}/versions/1/"):
        store.write(blob.key, models.store.read(blob.key).data)
    text = (REPO / "pipeline.toml").read_text()
    text = text.replace('contract = "schemas/', f'contract = "{REPO}/schemas/')
    config = root / "pipeline.toml"
    config.write_text(f"{text}\n[production]\n{shadow_section}\n")
    Models(store).add(Definition.from_files(config))
    return store


def _app(models: RegisteredModels, store: Any, url: str) -> Any:
    from modelrail.serving.app import create_app

    return create_app(
        {
            "store": store,
            "signer": models.signer,
            "model_name": MODEL,
            "model_version": 1,
            "shadow_url": url,
        }
    )


def _lines(store: Any) -> list[dict[str, Any]]:
    keys = sorted(blob.key for blob in store.list(shadow.prefix(MODEL, 1)))
    return [orjson.loads(line) for key in keys for line in store.read(key).data.splitlines()]


def _mirrored(app: Any, records: list[dict[str, Any]], requests: int) -> list[Any]:
    """Post ``requests`` requests of ``records`` to production, then stop its mirror;
    production's answers."""
    client = app.test_client()
    answers = []
    for number in range(requests):
        response = client.post(
            "/predict", json={"instances": records}, headers={"X-Request-Id": f"r-{number}"}
        )
        assert response.status_code == 200
        assert response.get_json()["model"]["version"] == 1
        answers.append(response.get_json()["predictions"])
    app.state.mirror.close()
    return answers


def test_every_mirrored_request_records_where_the_candidate_agreed(
    models: RegisteredModels, tmp_path: Path, candidate_url: str
) -> None:
    store = _store(models, tmp_path, "shadow = true\nshadow_rate = 1.0")
    app = _app(models, store, candidate_url)
    records = models.records[:40]
    # The sender reads the rate as it starts: the first request starts it.
    app.test_client().post("/predict", json={"instances": records[:1]})
    wait_for(lambda: app.state.mirror.rate == 1.0, "the mirror read its rate")
    answers = _mirrored(app, records, 5)

    lines = [line for line in _lines(store) if line["request_id"].startswith("r-")]
    assert sorted(line["request_id"] for line in lines) == [f"r-{n}" for n in range(5)]
    agreeing = sum(
        answer["label"] == _label(row) for answer, row in zip(answers[0], records, strict=True)
    )
    assert 0 < agreeing < len(records)  # the fake disagrees on some rows only
    for line in lines:
        assert (line["production"], line["candidate"], line["status"]) == (1, 7, 200)
        assert (line["rows"], line["agree"]) == (len(records), agreeing)
        assert line["production_ms"] > 0
        assert line["candidate_ms"] > 0
        assert "error" not in line
    assert b"Biscoe" not in b"".join(
        store.read(blob.key).data for blob in store.list(shadow.prefix(MODEL))
    )
    [comparison] = shadow.report(lines)
    assert comparison.agreement == pytest.approx(agreeing / len(records))
    assert (comparison.mirrored, comparison.errors) == (5, 0)


@pytest.mark.fault
def test_a_candidate_that_is_down_costs_records_never_an_answer(
    models: RegisteredModels, tmp_path: Path
) -> None:
    store = _store(models, tmp_path, "shadow = true\nshadow_rate = 1.0")
    app = _app(models, store, f"http://127.0.0.1:{free_port()}")
    app.test_client().post("/predict", json={"instances": models.records[:1]})
    wait_for(lambda: app.state.mirror.rate == 1.0, "the mirror read its rate")
    _mirrored(app, models.records[:3], 3)

    lines = [line for line in _lines(store) if line["request_id"].startswith("r-")]
    assert len(lines) == 3
    assert all(line["status"] == 0 and "Error" in line["error"] for line in lines)
    [comparison] = shadow.report(lines)
    assert (comparison.errors, comparison.agreement) == (3, None)


def test_with_shadow_off_nothing_is_mirrored(
    models: RegisteredModels, tmp_path: Path, candidate_url: str
) -> None:
    store = _store(models, tmp_path, "shadow = false")
    app = _app(models, store, candidate_url)
    client = app.test_client()
    assert client.post("/predict", json={"instances": models.records[:2]}).status_code == 200
    mirror = app.state.mirror
    mirror.close()  # the sender read the rate first
    assert mirror.rate == 0.0
    assert _lines(store) == []


def test_without_a_candidate_url_there_is_no_mirror(
    models: RegisteredModels, tmp_path: Path
) -> None:
    from modelrail.serving.app import create_app

    app = create_app(
        {"store": models.store, "signer": models.signer, "model_name": MODEL, "model_version": 1}
    )
    assert app.state.mirror is None


class _Stalled(BaseHTTPRequestHandler):
    """A candidate that answers nothing until the test lets it."""

    released = threading.Event()

    def do_POST(self) -> None:
        self.released.wait(STATE_DEADLINE_S)
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.fault
def test_a_stalled_candidate_fills_the_queue_and_drops_are_counted(tmp_path: Path) -> None:
    from modelrail.serving.shadow import ShadowMirror

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Stalled)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store = FilesystemStore(tmp_path, BUCKET)
    mirror = ShadowMirror(
        f"http://127.0.0.1:{server.server_address[1]}",
        store.write,
        lambda: 1.0,
        model=MODEL,
        version=1,
        capacity=2,
    )
    try:
        wait_for(lambda: mirror.sampled() and mirror.rate == 1.0, "the mirror read its rate")
        for number in range(10):  # never waits: the sender is stuck on the first
            mirror.mirror(f"s-{number}", b"{}", "application/json", [1.0], 0.001)
        assert mirror.dropped >= 7
    finally:
        _Stalled.released.set()
        mirror.close()
        server.shutdown()
        server.server_close()
    lines = _lines(store)
    assert len(lines) + mirror.dropped == 10
    assert sum(line.get("dropped", 0) for line in lines) == mirror.dropped
    assert all(line["status"] == 503 and "error" in line for line in lines)
