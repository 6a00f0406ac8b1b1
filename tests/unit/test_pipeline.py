"""The whole event graph on fakes: what issue-level behaviour the pipeline must show."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect

import orjson
import pytest

from modelrail.domain.dataset import checks
from modelrail.domain.registry import Registry
from modelrail.domain.training import split
from modelrail.kernel.errors import LeaseLost, TransientError
from modelrail.kernel.events import DatasetValidated, ModelRegistered, RetrainRequested
from modelrail.kernel.ports import Candidate, Deployment, JobState, Message
from modelrail.service import pipeline
from modelrail.service.stages import Outcome, deploy, launch_training, validate
from modelrail.settings.topology import Topology
from tests.conftest import REPO
from tests.unit.conftest import Harness


def _bad_csv(penguins_csv: bytes) -> bytes:
    text = penguins_csv.decode()
    text = text.replace(
        "Adelie,Torgersen,39.1,18.7,181,3750", "Adelie,Atlantis,39.1,18.7,181,99999", 1
    )
    return text.replace(",year", ",season").encode()


def test_an_upload_becomes_version_1_in_staging(harness: Harness, penguins_csv: bytes) -> None:
    harness.upload(penguins_csv)

    harness.run()

    [run] = harness.runs()
    assert run.outcome == "deployed"
    assert list(run.stages) == [
        "validate",
        "launch_training",
        "train",
        "evaluate",
        "register",
        "deploy",
    ]
    registry = harness.container.registry
    assert registry.versions(harness.model) == [1]
    assert registry.aliases(harness.model) == {"champion": 1, "staging": 1}
    assert [d.version for d in harness.deployer.deployed] == [1]
    [deployed] = harness.published("model-deployed")
    assert deployed["version"] == 1
    assert deployed["previous_version"] is None


def test_the_manifest_records_hashes_and_full_lineage(
    harness: Harness, penguins_csv: bytes
) -> None:
    upload = harness.upload(penguins_csv)
    harness.run()

    loaded = harness.container.registry.load(harness.model, 1)
    manifest = loaded.manifest
    assert set(manifest.files) == {
        "model.txt",
        "card.html",
        "reference.parquet",  # the hold-out it was judged on
        "profile.json",  # its training data's profile
    }
    assert loaded.model_text.startswith(b"tree\n")  # LightGBM text format, not a pickle
    lineage = manifest.lineage.to_json()
    assert lineage["trigger"] == {"kind": "upload", "key": upload.idempotency_key}
    assert lineage["data"]["uri"] == f"gs://{upload.bucket}/{upload.name}#{upload.generation}"
    snapshot = lineage["data"]["snapshot"]  # what train and evaluate read instead of the CSV
    assert snapshot["rows"] == 344
    stored = harness.container.artifacts.read(snapshot["key"]).data  # the parts' index
    assert hashlib.sha256(stored).hexdigest() == snapshot["sha256"]
    for part in orjson.loads(stored)["parts"]:
        data = harness.container.artifacts.read(part["key"]).data
        assert hashlib.sha256(data).hexdigest() == part["sha256"]
        assert data[:4] == b"PAR1"
    assert lineage["code"] == {"version": "test"}
    assert lineage["config"]["hash"] == harness.container.config.sha256
    assert manifest.verdict["blessed"] is True
    assert manifest.metrics["accuracy"] >= 0.9
    assert len(manifest.examples) == 3
    # Without a compiler (MODELRAIL_COMPILER unset) training builds no compiled
    # predictor, and says why; the run is not the worse for it.
    assert manifest.compiled == {
        "builds": [],
        "not_built": ["no compiler configured (MODELRAIL_COMPILER)"],
        "reader": "not built",
    }


@pytest.mark.fault
def test_the_same_upload_delivered_twice_is_one_run_and_one_version(
    harness: Harness, penguins_csv: bytes
) -> None:
    upload = harness.upload(penguins_csv)
    harness.deliver_upload(upload)

    harness.run()
    harness.deliver_upload(upload)  # and once more after the run finished
    harness.run()

    assert len(harness.runs()) == 1
    assert harness.container.registry.versions(harness.model) == [1]
    assert len(harness.deployer.deployed) == 1


@pytest.mark.fault
def test_the_same_retrain_request_twice_is_one_run(harness: Harness, penguins_csv: bytes) -> None:
    harness.upload(penguins_csv)
    harness.run()

    harness.retrain("nightly-2026-11-27")
    harness.retrain("nightly-2026-11-27")
    harness.run()

    runs = harness.runs()
    assert len(runs) == 2
    assert runs[1].trigger["request_id"] == "nightly-2026-11-27"
    assert harness.container.registry.versions(harness.model) == [1, 2]


def test_a_commit_retrain_records_the_commit_in_lineage(
    harness: Harness, penguins_csv: bytes
) -> None:
    harness.upload(penguins_csv)
    harness.run()

    request = RetrainRequested(commit_sha="0123456789abcdef0123456789abcdef01234567")
    harness.bus.publish("retrain-requested", orjson.dumps(request.to_body()), {})
    harness.run()

    manifest = harness.container.registry.manifest(harness.model, 2)
    assert manifest.lineage.trigger["kind"] == "commit"
    assert manifest.lineage.code["version"] == request.commit_sha


def test_a_dataset_breaking_the_contract_fails_with_every_problem_named(
    harness: Harness, penguins_csv: bytes
) -> None:
    harness.upload(penguins_csv)
    harness.run()

    harness.upload(_bad_csv(penguins_csv), name="uploads/penguins/bad.csv")
    harness.run()

    [failed] = harness.published("pipeline-failed")
    assert failed["stage"] == "validate"
    assert failed["error"]["kind"] == "contract_violation"
    checks = {(p["check"], p["column"]) for p in failed["error"]["details"]["problems"]}
    assert checks == {
        ("missing_column", "year"),
        ("unexpected_column", "season"),
        ("category", "island"),
        ("range", "body_mass_g"),
    }
    report = orjson.loads(
        harness.storage.bucket("modelrail-artifacts")
        .read(failed["report_uri"].removeprefix("gs://modelrail-artifacts/"))
        .data
    )
    assert report["passed"] is False
    assert {p["check"]: p["rows"] for p in report["problems"]}["category"] == [1]
    assert harness.container.registry.versions(harness.model) == [1]
    assert harness.container.registry.aliases(harness.model) == {"champion": 1, "staging": 1}
    assert len(harness.deployer.deployed) == 1


def test_a_candidate_worse_than_the_champion_is_rejected_and_staging_keeps_it(
    harness: Harness, penguins_csv: bytes
) -> None:
    harness.upload(penguins_csv)
    harness.run()
    # Scramble the labels outside the hold-out: the data still meets the contract, the
    # candidate learns noise, and the champion still scores well on the clean hold-out.
    lines = penguins_csv.decode().splitlines()
    header, rows = lines[0], lines[1:]
    config = harness.container.config
    holdout = set(split(checks.load(penguins_csv, config.contract), config).holdout.tolist())
    species = ["Adelie", "Chinstrap", "Gentoo"]
    noisy = [
        row if i in holdout else f"{species[i % 3]},{row.split(',', 1)[1]}"
        for i, row in enumerate(rows)
    ]
    harness.upload(("\n".join([header, *noisy]) + "\n").encode(), name="uploads/penguins/noisy.csv")

    harness.run()

    [failed] = harness.published("pipeline-failed")
    assert failed["stage"] == "evaluate"
    assert failed["error"]["kind"] == "gate_rejected"
    failed_checks = [c for c in failed["error"]["details"]["verdict"]["checks"] if not c["passed"]]
    assert {"max_change_abs", "max_change_rel"} <= {c["kind"] for c in failed_checks}
    assert any(
        "vs champion" in reason for reason in failed["error"]["details"]["verdict"]["reasons"]
    )
    assert harness.runs()[-1].outcome == "rejected"
    assert harness.container.registry.versions(harness.model) == [1]
    assert harness.container.registry.aliases(harness.model)["staging"] == 1


def test_a_failed_smoke_test_keeps_staging_on_the_previous_version(
    harness: Harness, penguins_csv: bytes
) -> None:
    harness.upload(penguins_csv)
    harness.run()
    harness.deployer.fail_versions = frozenset({2})

    harness.retrain("second")
    harness.run()

    [failed] = harness.published("pipeline-failed")
    assert (failed["stage"], failed["error"]["kind"]) == ("deploy", "deployment_failed")
    assert harness.container.registry.aliases(harness.model) == {"champion": 2, "staging": 1}


@pytest.mark.fault
def test_a_late_deploy_event_for_an_older_version_is_a_no_op(
    harness: Harness, penguins_csv: bytes
) -> None:
    harness.upload(penguins_csv)
    harness.run()
    harness.retrain("second")
    harness.run()
    [first, _] = harness.published("model-registered")

    # The v1 event arrives again under a new message id, as a late publish would.
    harness.bus.publish("model-registered", orjson.dumps({**first, "event_id": "late"}), {})
    harness.run()

    assert [d.version for d in harness.deployer.deployed] == [1, 2]
    assert harness.container.registry.aliases(harness.model)["staging"] == 2


def test_a_message_that_keeps_failing_is_dead_lettered(
    harness: Harness, penguins_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[int] = []

    def broken_handler(message: Message) -> None:
        attempts.append(message.delivery_attempt)
        raise ConnectionError("the artifact bucket is unreachable")

    harness.bus.subscribe("data-uploaded--validate", broken_handler)
    harness.upload(penguins_csv)

    harness.run()

    assert attempts == [1, 2, 3, 4, 5]  # max_delivery_attempts in topology.yaml
    [held] = harness.bus.held["dead-letter--hold"]
    assert held.attributes["CloudPubSubDeadLetterSourceSubscription"] == "data-uploaded--validate"
    dead_letters = (harness.container.settings.home / "dead-letter.jsonl").read_bytes().splitlines()
    assert len(dead_letters) == 1
    assert harness.runs() == []


@pytest.mark.fault
def test_a_transient_failure_is_redelivered_and_then_succeeds(
    harness: Harness, penguins_csv: bytes
) -> None:
    start = harness.deployer.start
    calls: list[int] = []

    def flaky(model: str, version: int):  # type: ignore[no-untyped-def]
        calls.append(version)
        if len(calls) == 1:
            raise TimeoutError("rollout timed out")
        return start(model, version)

    harness.deployer.start = flaky  # type: ignore[method-assign]
    harness.upload(penguins_csv)

    harness.run()

    assert calls == [1, 1]
    assert harness.runs()[0].outcome == "deployed"


@pytest.mark.fault
def test_a_stage_failing_on_every_delivery_ends_its_run_failed_not_dead_lettered(
    harness: Harness, penguins_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []

    def unreachable(self: Registry, model: str, run_id: str, *args: object, **kw: object) -> None:
        attempts.append(run_id)
        raise TransientError("the artifact bucket is unreachable")

    monkeypatch.setattr(Registry, "register", unreachable)
    harness.upload(penguins_csv)

    harness.run()

    assert len(attempts) == 5  # max_delivery_attempts in topology.yaml
    [run] = harness.runs()
    assert run.outcome == "failed"
    assert run.stages["register"].error["kind"] == "retries_exhausted"
    [failed] = harness.published("pipeline-failed")
    assert failed["stage"] == "register"
    assert "TransientError: the artifact bucket is unreachable" in failed["error"]["message"]
    assert harness.bus.held["dead-letter--hold"] == []


@pytest.mark.fault
def test_the_last_attempt_is_known_on_a_bus_that_does_not_count_deliveries(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(trigger: object, *, run_id: str) -> Outcome:
        raise ConnectionError("the data bucket is unreachable")

    monkeypatch.setattr(validate, "handle", unreachable)
    body = RetrainRequested(request_id="r-1").to_body()
    # As the Pub/Sub emulator pushes it: every delivery says attempt 1.
    message = Message(orjson.dumps(body), {}, "m-1", 1, None, "retrain-requested")

    for _ in range(4):
        with pytest.raises(ConnectionError):
            pipeline.consume(harness.container, "validate", message)
    record = pipeline.consume(harness.container, "validate", message)

    assert record is not None
    assert record.error["kind"] == "retries_exhausted"
    assert record.error["details"]["attempts"] == 5
    [failed] = harness.published("pipeline-failed")
    assert failed["run_id"] == record.run_id


@pytest.mark.fault
def test_a_register_delivery_that_dies_after_its_claim_is_resumed_by_the_next(
    harness: Harness, penguins_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    claim_number = Registry._claim_next_number
    calls: list[str] = []

    def dies_once(self: Registry, model: str, run_id: str) -> int:
        calls.append(run_id)
        if len(calls) == 1:
            raise ConnectionError("the process died here")
        return claim_number(self, model, run_id)

    monkeypatch.setattr(Registry, "_claim_next_number", dies_once)
    harness.upload(penguins_csv)

    harness.run()

    assert len(calls) == 2  # the second attempt took the run's claim over at once
    [run] = harness.runs()
    assert run.outcome == "deployed"
    assert harness.container.registry.versions(harness.model) == [1]


@pytest.mark.fault
def test_an_invalid_event_ends_in_pipeline_failed(harness: Harness) -> None:
    harness.bus.publish("retrain-requested", b'{"event_type": "retrain-requested"}', {})

    harness.run()

    [failed] = harness.published("pipeline-failed")
    assert failed["error"]["kind"] == "invalid_event"


@pytest.mark.fault
def test_an_event_whose_time_is_not_a_date_time_is_refused_and_recorded(
    harness: Harness, penguins_csv: bytes
) -> None:
    harness.upload(penguins_csv)
    harness.run()
    [registered] = harness.published("model-registered")

    harness.bus.publish(
        "model-registered",
        orjson.dumps({**registered, "event_id": "other", "occurred_at": "next tuesday, 10am"}),
        {},
    )
    harness.run()

    [failed] = harness.published("pipeline-failed")
    assert failed["error"]["kind"] == "invalid_event"
    assert "'next tuesday, 10am' is not a 'date-time'" in failed["error"]["message"]
    record = harness.container.runs.stage_record(registered["run_id"], "deploy")
    assert record is not None  # the earlier, valid delivery's record stands


@pytest.mark.fault
def test_an_event_from_another_configuration_is_refused(
    harness: Harness, penguins_csv: bytes
) -> None:
    harness.upload(penguins_csv)
    harness.run()
    [registered] = harness.published("model-registered")
    lineage = {
        **registered["lineage"],
        "config": {**registered["lineage"]["config"], "hash": "0" * 64},
    }

    harness.bus.publish(
        "model-registered",
        orjson.dumps({**registered, "run_id": "run-" + "1" * 20, "lineage": lineage}),
        {},
    )
    harness.run()

    [failed] = harness.published("pipeline-failed")
    assert failed["error"]["kind"] == "config_changed"


def test_a_non_csv_upload_does_not_start_training(harness: Harness) -> None:
    harness.upload(b"hello", name="uploads/penguins/notes.txt")

    harness.run()

    [failed] = harness.published("pipeline-failed")
    assert failed["error"]["kind"] == "invalid_event"
    assert harness.published("dataset-validated") == []


def test_each_version_has_a_model_card(harness: Harness, penguins_csv: bytes) -> None:
    harness.upload(penguins_csv)
    harness.run()

    store = harness.storage.bucket("modelrail-artifacts")
    card = store.read(f"models/{harness.model}/versions/1/card.html").data.decode()

    assert "penguins — version 1" in card
    assert "accuracy" in card
    assert "<svg" in card  # the feature-importance plot
    assert "flipper_length_mm" in card


def test_a_message_on_the_retrain_topic_without_event_type_is_a_retrain_request(
    harness: Harness, penguins_csv: bytes
) -> None:
    harness.upload(penguins_csv)
    harness.run()

    # What a person publishes by hand: `gcloud pubsub topics publish retrain-requested
    # --message '{"request_id": "by-hand"}'`.
    harness.bus.publish("retrain-requested", b'{"request_id": "by-hand"}', {})
    harness.run()

    assert harness.published("pipeline-failed") == []
    assert harness.runs()[-1].trigger["request_id"] == "by-hand"
    assert harness.container.registry.versions(harness.model) == [1, 2]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # No idempotency key: the retrain schema's own reason, not the upload schema's.
        (b'{"reason": "nightly"}', "retrain-requested event does not match its schema"),
        # Whatever event_type it claims, a message on this topic is judged as a retrain.
        (
            b'{"event_type": "data-uploaded", "bucket": "b", "name": "n", "generation": "1"}',
            "retrain-requested event does not match its schema",
        ),
    ],
)
def test_an_invalid_message_on_the_retrain_topic_is_refused_with_the_retrain_schemas_reason(
    harness: Harness, body: bytes, reason: str
) -> None:
    harness.bus.publish("retrain-requested", body, {})

    harness.run()

    [failed] = harness.published("pipeline-failed")
    assert failed["error"]["kind"] == "invalid_event"
    assert failed["error"]["message"].startswith(reason), failed["error"]["message"]
    assert "'bucket' is a required property" not in failed["error"]["message"]


@pytest.mark.parametrize(
    "stage", [stage.name for stage in Topology.load(REPO / "topology.yaml").stages]
)
def test_each_stage_gets_exactly_the_ports_it_names(harness: Harness, stage: str) -> None:
    seen: dict[str, object] = {}

    def spy(event: object, **ports: object) -> object:
        seen.update(ports)
        return event

    handler = pipeline._handler(stage)
    spy.__signature__ = inspect.signature(handler)  # type: ignore[attr-defined]
    given: dict[str, object] = {
        "run_id": "run-1",
        "causation_id": "event-1",
        "message_id": "message-1",
        "delivery_attempt": 2,
        "lineage": {"trigger": {"kind": "upload"}},
    }
    assert pipeline.inject(spy, harness.container, given)("event") == "event"  # type: ignore[arg-type]
    named = {
        name
        for name, parameter in inspect.signature(handler).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert set(seen) == named
    for name, value in seen.items():
        expected = given[name] if name in given else harness.container.provide(name)
        assert value is expected or value == expected, name


def test_a_handler_naming_an_unknown_port_fails_at_injection(harness: Harness) -> None:
    def handle(event: object, *, warehouse: object) -> object:
        return event

    with pytest.raises(TypeError, match="warehouse"):
        pipeline.inject(handle, harness.container, {})  # type: ignore[arg-type]


@pytest.mark.fault
def test_a_deploy_that_outlived_its_lease_commits_nothing_and_the_newer_serves_again(
    harness: Harness, penguins_csv: bytes
) -> None:
    harness.upload(penguins_csv)
    harness.run()
    harness.deployer.fail_versions = frozenset({2, 3})
    harness.retrain()
    harness.retrain()
    harness.run()
    second, third = [
        ModelRegistered.from_body(body) for body in harness.published("model-registered")[1:]
    ]
    harness.deployer.fail_versions = frozenset()
    registry, leases, fake = harness.container.registry, harness.container.leases, harness.deployer

    class Racing:
        """v2's rollout outlives its lease, and v3's deploy runs to its end meanwhile."""

        def current(self) -> Deployment | None:
            return fake.current()

        def start(self, model: str, version: int) -> Candidate:
            if version == 2:
                lease = f"models/{model}/leases/{deploy.STAGING}.json"
                held = registry.store.read(lease)
                expired = {**orjson.loads(held.data), "expires_at": 0}
                registry.store.write(
                    lease, orjson.dumps(expired), if_generation_match=held.generation
                )
                deploy.handle(third, registry=registry, leases=leases, deployer=fake)
            return fake.start(model, version)

        def promote(self, candidate: Candidate) -> Deployment:
            return fake.promote(candidate)

        def discard(self, candidate: Candidate) -> str:
            return fake.discard(candidate)

    # v2's rollout finds its lease taken over: it commits nothing (the alias stays on
    # v3) and its delivery is retried ...
    with pytest.raises(LeaseLost):
        deploy.handle(
            second,
            registry=registry,
            leases=leases,
            deployer=Racing(),  # type: ignore[arg-type]
        )
    assert registry.aliases(harness.model)["staging"] == 3
    assert [d.version for d in fake.deployed][-2:] == [3, 2]
    # ... and the redelivery, finding the alias past it, serves v3 again.
    outcome = deploy.handle(second, registry=registry, leases=leases, deployer=fake)

    assert outcome.status == "skipped"
    assert [d.version for d in fake.deployed][-3:] == [3, 2, 3]
    assert fake.current() is not None
    assert fake.current().version == 3  # type: ignore[union-attr]


@pytest.mark.fault
def test_the_same_event_delivered_at_once_launches_one_training_job(
    harness: Harness, penguins_csv: bytes
) -> None:
    harness.upload(penguins_csv)
    harness.run()
    [validated] = harness.published("dataset-validated")
    # A run whose launch nobody has claimed yet (the harness's own run launched already).
    event = dataclasses.replace(DatasetValidated.from_body(validated), run_id="run-" + "f" * 20)
    launches: list[str] = []

    class Launcher:
        """While the first delivery launches, two more deliveries of the event arrive."""

        def launch(self, job: str, event_json: bytes) -> str:
            launches.append(job)
            for message_id in ("m-2", "m-3"):
                with pytest.raises(TransientError, match="another delivery is launching"):
                    launch(message_id)
            return f"{job}-1"

        def state(self, execution: str) -> JobState:
            return JobState("running")

    def launch(message_id: str) -> Outcome:
        return launch_training.handle(
            event,
            launcher=Launcher(),
            training_job="train",
            runs=harness.container.runs,
            message_id=message_id,
        )

    assert launch("m-1").output == {"job": "train", "execution": "train-1"}
    assert launches == ["train"]
    # The first message's own redelivery (its delivery died before launching) may launch.
    assert launch("m-1").output["execution"] == "train-1"
