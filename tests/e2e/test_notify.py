"""Notifications as a user sets them up: a pipeline.toml with two webhooks whose URLs are
in the environment, a webhook receiver of the test's own on 127.0.0.1. An upload's
deploy reaches the working webhook in one line; the webhook answering 500 is asked
again within its bound, then recorded failed, and the run is deployed all the same; a
drift `modelrail monitor` finds reaches the working webhook too."""

from __future__ import annotations

import contextlib
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import PENGUINS, REPO, penguin_rows
from tests.e2e.test_monitor import SHIFTED, _moment, _send
from tests.e2e.test_own_data import OwnUser

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("monitor")]

NOTIFY = """
[[notify.webhooks]]
name = "team"
events = ["model-deployed", "drift-detected"]
url_env = "MODELRAIL_WEBHOOK_TEAM"

[[notify.webhooks]]
name = "broken"
events = ["model-deployed"]
format = "json"
url_env = "MODELRAIL_WEBHOOK_BROKEN"
"""


class Receiver:
    """A webhook receiver: ``/team`` answers 204, ``/broken`` 500; every body kept."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[Any]] = {"/team": [], "/broken": []}
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.bodies.setdefault(self.path, []).append(orjson.loads(body))
                self.send_response(204 if self.path == "/team" else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[Receiver]:
        """A receiver serving until the block ends, its port released after."""
        receiver = cls()
        receiver.thread.start()
        try:
            yield receiver
        finally:
            receiver.server.shutdown()
            receiver.server.server_close()
            receiver.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver.running() as receiver:
        yield receiver


@pytest.fixture
def user(tmp_path: Path, receiver: Receiver) -> Iterator[OwnUser]:
    """The bundled penguins definition, logging every request, with the two webhooks."""
    user = OwnUser(tmp_path)
    user.env["MODELRAIL_WEBHOOK_TEAM"] = receiver.url("/team")
    user.env["MODELRAIL_WEBHOOK_BROKEN"] = receiver.url("/broken")
    contract = Path("schemas") / "datasets" / "penguins.json"
    (tmp_path / contract).parent.mkdir(parents=True)
    shutil.copy(REPO / contract, tmp_path / contract)
    pipeline = (REPO / "pipeline.toml").read_text()
    assert "log_rate = 0.05" in pipeline
    pipeline = pipeline.replace("log_rate = 0.05", "log_rate = 1.0") + NOTIFY
    (tmp_path / "pipeline.toml").write_text(pipeline)
    try:
        user.run("add", "pipeline.toml")
        yield user
    finally:
        user.run("down", check=False)


def _deliveries(user: OwnUser, webhook: str) -> list[dict[str, Any]]:
    folder = user.workdir / ".modelrail" / "buckets" / "modelrail-artifacts" / "notifications"
    return [orjson.loads(path.read_bytes()) for path in sorted(folder.glob(f"*/*/{webhook}.json"))]


def test_deploy_and_drift_reach_the_webhook_and_a_broken_one_changes_no_run(
    user: OwnUser, receiver: Receiver
) -> None:
    uploaded = user.run("upload", str(PENGUINS))
    assert "deployed" in uploaded.stdout

    [deployed] = receiver.bodies["/team"]
    [run] = orjson.loads(user.run("runs", "--json").stdout)
    assert run["outcome"] == "deployed"
    assert deployed["text"].startswith(
        f"modelrail penguins v1: deployed to staging (run {run['run_id']}): serving at http://"
    )
    # The broken webhook asked for the event itself, and was asked on every attempt.
    broken = receiver.bodies["/broken"]
    assert len(broken) == 5
    assert {body["event_type"] for body in broken} == {"model-deployed"}
    [failed] = _deliveries(user, "broken")
    assert (failed["status"], failed["attempts"], failed["error"]) == ("failed", 5, "HTTP 500")
    [delivered] = _deliveries(user, "team")
    assert delivered["status"] == "delivered"
    assert not (user.workdir / ".modelrail" / "dead-letter.jsonl").exists()

    [model] = orjson.loads(user.run("models", "--json").stdout)
    records = penguin_rows()
    start = _moment()
    _send(model["staging_url"], records, seed=2, shift=25.0)
    end = _moment()
    user.run("down")  # its workers write what they hold as they stop
    report = orjson.loads(user.run("monitor", "--since", start, "--until", end, "--json").stdout)
    assert report["drifted"] == [SHIFTED]

    drift = receiver.bodies["/team"][1:]
    [told] = drift
    assert told["text"].startswith("modelrail penguins v1: drift in what staging is asked: ")
    assert f"{SHIFTED} (PSI " in told["text"]
    assert len(receiver.bodies["/broken"]) == 5  # it did not ask for drift
