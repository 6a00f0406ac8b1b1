"""Notifications: what each event tells, in which body, to which webhook; how a webhook's
answer is judged; and the notifier on the real pipeline (embedded mode on fakes): a
webhook that fails is retried within its subscription's bound, then recorded failed,
and nothing of it reaches the run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from modelrail.adapters.local.secrets import EnvironmentSecrets
from modelrail.composition.bootstrap import bootstrap
from modelrail.domain.config import NOTIFY_EVENTS, PipelineConfig, Webhook
from modelrail.domain.notifications import Deliveries, body_for, judge, notice_of
from modelrail.kernel.errors import ConfigError, TransientError
from modelrail.kernel.events import DriftDetected, PipelineFailed
from modelrail.kernel.ports import Message
from modelrail.service import notifications
from modelrail.settings.process import Settings
from modelrail.settings.topology import Topology
from tests.conftest import REPO, installed
from tests.fakes import FakeDeployer, FakeWebhooks, InMemoryStorage
from tests.unit.conftest import Harness

URL = "https://hooks.example.com/services/T000/B000/XXXX"
LINEAGE = {"config": {"model": "penguins", "hash": "0" * 64}}


def _failed(kind: str, reasons: list[str] | None = None) -> dict[str, Any]:
    details = {"verdict": {"reasons": reasons}} if reasons else {}
    return {
        "event_type": "pipeline-failed",
        "event_id": "e-1",
        "run_id": "run-1",
        "lineage": LINEAGE,
        "stage": "evaluate",
        "error": {"kind": kind, "message": "it failed", "details": details},
        "report_uri": None,
    }


# ---------------------------------------------------------------- what an event tells


def test_a_rejection_is_its_own_kind_with_the_gate_s_reasons() -> None:
    notice = notice_of("pipeline-failed", _failed("gate_rejected", ["accuracy 0.5 < 0.9"]))
    assert notice is not None
    assert notice.kind == "gate-rejected"
    assert notice.text() == (
        "modelrail penguins: candidate rejected by the gate (run run-1): "
        "evaluate failed (gate_rejected): accuracy 0.5 < 0.9"
    )


def test_any_other_failure_is_pipeline_failed_with_its_message() -> None:
    notice = notice_of("pipeline-failed", _failed("contract_violation"))
    assert notice is not None
    assert (notice.kind, notice.model, notice.run_id) == ("pipeline-failed", "penguins", "run-1")
    assert notice.text().endswith("evaluate failed (contract_violation): it failed")


def test_a_deploy_names_the_version_its_url_and_the_one_before() -> None:
    body = {
        "event_type": "model-deployed", "event_id": "e-2", "run_id": "run-2",
        "lineage": LINEAGE, "model": "penguins", "version": 3,
        "url": "http://127.0.0.1:8765", "revision": "r3", "previous_version": 2,
    }  # fmt: skip
    notice = notice_of("model-deployed", body)
    assert notice is not None
    assert notice.text() == (
        "modelrail penguins v3: deployed to staging (run run-2): "
        "serving at http://127.0.0.1:8765 (revision r3, after v2)"
    )


def test_a_drift_names_each_drifted_feature_and_the_window() -> None:
    event = DriftDetected(
        model="penguins", version=1, window={"from": "2026-01-01T00:00", "to": "2026-01-02T00:00"},
        features=[{"feature": "flipper_length_mm", "psi": 1.23456, "fail": 0.25}],
        report_uri="file:///r.json",
    )  # fmt: skip
    notice = notice_of("drift-detected", event.to_body())
    assert notice is not None
    assert (notice.kind, notice.version, notice.run_id) == ("drift-detected", 1, None)
    assert "flipper_length_mm (PSI 1.235) drifted, 2026-01-01T00:00 to 2026-01-02T00:00" in (
        notice.text()
    )


def test_a_run_no_model_owns_tells_nobody() -> None:
    body = _failed("unknown_model") | {"lineage": {"config": {"model": None}}}
    assert notice_of("pipeline-failed", body) is None


def test_slack_gets_one_line_and_json_the_event_itself() -> None:
    body = _failed("gate_rejected", ["worse than the champion"])
    notice = notice_of("pipeline-failed", body)
    assert notice is not None
    slack = orjson.loads(body_for(Webhook("team", url_env="X"), notice))
    assert slack == {"text": notice.text()}
    assert orjson.loads(body_for(Webhook("tool", format="json", url_env="X"), notice)) == body


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, "delivered"), (204, "delivered"), (500, "retry"), (503, "retry"),
        (429, "retry"), (408, "retry"), (400, "refused"), (403, "refused"),
        (404, "refused"), (410, "refused"), (301, "refused"),
    ],
)  # fmt: skip
def test_a_webhook_s_answer_is_delivered_worth_retrying_or_refused(
    status: int, verdict: str
) -> None:
    assert judge(status) == verdict


# ---------------------------------------------------------------- the configuration


def _config(tmp_path: Path, notify: str) -> PipelineConfig:
    text = (REPO / "pipeline.toml").read_text()
    text = text.replace('contract = "schemas/', f'contract = "{REPO}/schemas/', 1) + notify
    (tmp_path / "pipeline.toml").write_text(text)
    return PipelineConfig.load(tmp_path / "pipeline.toml")


def test_a_webhook_is_told_everything_in_slack_s_body_unless_it_says(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        '\n[[notify.webhooks]]\nname = "team"\nurl_env = "MODELRAIL_WEBHOOK_TEAM"\n'
        '\n[[notify.webhooks]]\nname = "pager"\nevents = ["pipeline-failed"]\nformat = "json"\n'
        'url_secret = "projects/p/secrets/pager/versions/latest"\n',
    )
    assert config.webhooks == (
        Webhook("team", NOTIFY_EVENTS, "slack", None, "MODELRAIL_WEBHOOK_TEAM"),
        Webhook("pager", ("pipeline-failed",), "json", "projects/p/secrets/pager/versions/latest"),
    )


@pytest.mark.parametrize(
    "entry",
    [f'url = "{URL}"', f'url_env = "{URL}"', f'url_secret = "{URL}"'],
    ids=["url", "in-url-env", "in-url-secret"],
)
def test_a_url_written_in_the_file_is_refused_saying_where_it_belongs(
    tmp_path: Path, entry: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        _config(tmp_path, f'\n[[notify.webhooks]]\nname = "team"\n{entry}\n')
    assert "a webhook URL is never written in pipeline.toml" in str(refused.value)
    assert "url_secret" in str(refused.value)
    assert "url_env" in str(refused.value)


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ('name = "team"', "url_secret"),
        ('name = "team"\nurl_env = "X"\nevents = ["run-started"]', "run-started"),
        ('name = "team"\nurl_env = "X"\n\n[[notify.webhooks]]\nname = "team"\nurl_env = "Y"',
         "names 'team' more than once"),
    ],
    ids=["no-url-source", "unknown-event", "same-name-twice"],
)  # fmt: skip
def test_a_webhook_entry_that_cannot_work_is_refused(
    tmp_path: Path, entry: str, complaint: str
) -> None:
    with pytest.raises(ConfigError, match="invalid pipeline config") as refused:
        _config(tmp_path, f"\n[[notify.webhooks]]\n{entry}\n")
    assert complaint in str(refused.value)


# ---------------------------------------------------------------- the graph


def test_the_notifier_listens_and_follows_no_stage() -> None:
    topology = Topology.load(REPO / "topology.yaml")
    assert topology.listeners == ("notify", "launch_batch")
    assert topology.next_stage("deploy") is None
    assert topology.next_stage("register") == "deploy"
    assert set(topology.consumed_topics("notify")) == {
        "pipeline-failed", "model-deployed", "drift-detected",
    }  # fmt: skip
    for subscription in topology.subscriptions:
        if subscription.consumer == "notify":
            assert (subscription.minimum_backoff_s, subscription.maximum_backoff_s) == (1, 8)
        elif subscription.consumer is not None:
            assert (subscription.minimum_backoff_s, subscription.maximum_backoff_s) == (10, 600)


def test_a_listener_that_is_also_a_stage_is_refused(tmp_path: Path) -> None:
    text = (REPO / "topology.yaml").read_text().replace("  - name: notify ", "  - name: deploy ")
    (tmp_path / "topology.yaml").write_text(text)
    with pytest.raises(ConfigError, match="both as stages and as listeners"):
        Topology.load(tmp_path / "topology.yaml")


# ---------------------------------------------------------------- the notifier at work


NOTIFY = """
[[notify.webhooks]]
name = "team"
url_env = "TEAM_URL"
"""


@pytest.fixture
def notifying(settings: Settings, tmp_path: Path) -> Callable[..., Harness]:
    """A harness whose model tells the webhooks of ``notify`` (pipeline.toml's syntax),
    their URLs in ``environment``, posting through ``webhooks``."""

    def make(
        webhooks: FakeWebhooks, notify: str = NOTIFY, environment: dict[str, str] | None = None
    ) -> Harness:
        _config(tmp_path, notify)
        storage = InMemoryStorage(settings.data_bucket, settings.artifact_bucket)
        deployer = FakeDeployer()
        environ = {"TEAM_URL": "https://team.example/hook"} if environment is None else environment
        container = bootstrap(
            settings,
            storage_factory=lambda: storage,
            deployer_factory=lambda _model: deployer,
            secrets_factory=lambda: EnvironmentSecrets(environ),
            webhooks_factory=lambda: webhooks,
        )
        return Harness(installed(container, tmp_path / "pipeline.toml"), storage, deployer)

    return make


def _deliveries(harness: Harness) -> list[dict[str, Any]]:
    store = harness.container.artifacts
    return [orjson.loads(store.read(i.key).data) for i in store.list("notifications/")]


def test_an_upload_s_deploy_is_told_once_in_one_line(
    notifying: Callable[..., Harness], penguins_csv: bytes
) -> None:
    webhooks = FakeWebhooks(200)
    harness = notifying(webhooks)
    harness.upload(penguins_csv)
    harness.run()

    [run] = harness.runs()
    assert run.outcome == "deployed"
    [body] = webhooks.to("https://team.example/hook")
    assert body["text"].startswith(f"modelrail penguins v1: deployed to staging (run {run.run_id})")
    [delivery] = _deliveries(harness)
    assert (delivery["status"], delivery["attempts"], delivery["http_status"]) == (
        "delivered", 1, 200,
    )  # fmt: skip
    assert delivery["event_kind"] == "model-deployed"
    assert "url" not in delivery


def test_a_webhook_answering_500_is_retried_within_its_bound_then_recorded_failed(
    notifying: Callable[..., Harness], penguins_csv: bytes
) -> None:
    webhooks = FakeWebhooks(500)
    harness = notifying(webhooks)
    harness.upload(penguins_csv)
    harness.run()

    [run] = harness.runs()
    assert run.outcome == "deployed"
    assert len(webhooks.posts) == 5  # the notifier subscription's max_delivery_attempts
    assert harness.clock.slept == [1.0, 2.0, 4.0, 8.0]  # its own backoff, not the stages'
    [delivery] = _deliveries(harness)
    assert (delivery["status"], delivery["attempts"], delivery["error"]) == (
        "failed", 5, "HTTP 500",
    )  # fmt: skip
    assert not harness.published("dead-letter")
    assert not harness.bus.held["dead-letter--hold"]


def test_a_webhook_that_hangs_then_answers_is_delivered_on_the_retry(
    notifying: Callable[..., Harness], penguins_csv: bytes
) -> None:
    webhooks = FakeWebhooks(TimeoutError("no answer within 10 s"), 200)
    harness = notifying(webhooks)
    harness.upload(penguins_csv)
    harness.run()

    assert len(webhooks.posts) == 2
    [delivery] = _deliveries(harness)
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 2)


def test_a_refusing_webhook_is_recorded_failed_without_a_retry(
    notifying: Callable[..., Harness], penguins_csv: bytes
) -> None:
    webhooks = FakeWebhooks(404)
    harness = notifying(webhooks)
    harness.upload(penguins_csv)
    harness.run()

    assert len(webhooks.posts) == 1
    assert harness.clock.slept == []
    [delivery] = _deliveries(harness)
    assert (delivery["status"], delivery["error"]) == ("failed", "HTTP 404")
    assert harness.runs()[0].outcome == "deployed"


def test_a_url_not_in_the_environment_is_recorded_failed_and_nothing_posted(
    notifying: Callable[..., Harness], penguins_csv: bytes
) -> None:
    webhooks = FakeWebhooks(200)
    harness = notifying(webhooks, environment={})
    harness.upload(penguins_csv)
    harness.run()

    assert webhooks.posts == []
    [delivery] = _deliveries(harness)
    assert delivery["status"] == "failed"
    assert delivery["error"] == "the environment variable TEAM_URL is not set"
    assert harness.runs()[0].outcome == "deployed"


def test_a_retry_posts_again_only_to_the_webhook_that_failed(
    notifying: Callable[..., Harness], penguins_csv: bytes
) -> None:
    class ByUrl(FakeWebhooks):
        def post(self, url: str, body: bytes) -> int:
            self.posts.append((url, orjson.loads(body)))
            return 200 if url.endswith("ok") or len(self.posts) >= 3 else 503

    webhooks = ByUrl()
    notify = NOTIFY + '\n[[notify.webhooks]]\nname = "other"\nurl_env = "OTHER_URL"\n'
    harness = notifying(webhooks, notify, {"TEAM_URL": "https://a/ok", "OTHER_URL": "https://b/x"})
    harness.upload(penguins_csv)
    harness.run()

    assert len(webhooks.to("https://a/ok")) == 1
    assert len(webhooks.to("https://b/x")) == 2
    assert {(d["webhook"], d["status"]) for d in _deliveries(harness)} == {
        ("team", "delivered"), ("other", "delivered"),
    }  # fmt: skip


def test_a_webhook_is_told_only_the_kinds_it_asked_for(
    notifying: Callable[..., Harness], penguins_csv: bytes
) -> None:
    webhooks = FakeWebhooks(200)
    notify = NOTIFY.replace('name = "team"', 'name = "team"\nevents = ["gate-rejected"]')
    harness = notifying(webhooks, notify)
    harness.upload(penguins_csv)
    harness.run()
    assert webhooks.posts == []  # a deploy, not a rejection

    [deployed] = harness.published("model-deployed")
    for kind in ("contract_violation", "gate_rejected"):
        body = _failed(kind, ["worse than the champion"])
        event = PipelineFailed(
            run_id="run-" + "2" * 20, causation_id="e-0", lineage=deployed["lineage"],
            stage="evaluate", error=body["error"], report_uri=None,
        )  # fmt: skip
        harness.bus.publish("pipeline-failed", orjson.dumps(event.to_body()), {})
    harness.run()

    [body] = webhooks.to("https://team.example/hook")
    assert "candidate rejected by the gate" in body["text"]


def test_the_notifier_writes_only_its_own_records(
    notifying: Callable[..., Harness], penguins_csv: bytes
) -> None:
    webhooks = FakeWebhooks(200)
    harness = notifying(webhooks)
    harness.upload(penguins_csv)
    harness.run()
    store = harness.container.artifacts
    before = {i.key: i.generation for i in store.list()}
    [deployed] = harness.published("model-deployed")

    webhooks.answers = [500]
    message = Message(orjson.dumps(deployed | {"event_id": "e-new"}), {}, "m-1", 1, None,
                      "model-deployed")  # fmt: skip
    with pytest.raises(TransientError, match="may answer later"):
        notifications.consume(harness.container, message)
    after = {i.key: i.generation for i in store.list()}
    changed = {key for key in after if before.get(key) != after[key]}
    assert changed == {Deliveries.key("penguins", "e-new", "team")}


def test_a_message_that_is_no_event_is_acknowledged_and_tells_nobody(
    notifying: Callable[..., Harness],
) -> None:
    webhooks = FakeWebhooks(200)
    harness = notifying(webhooks)
    for data in (b"not json", b'{"event_type": "model-deployed"}'):
        notifications.consume(harness.container, Message(data, {}, "m", 1, None, "model-deployed"))
    assert webhooks.posts == []
    assert _deliveries(harness) == []
