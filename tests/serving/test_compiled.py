"""The compiled predictor: built and verified by training, loaded and verified again
by the service; the same doubles as LightGBM, or not used at all.

Exactness is checked against ``lightgbm.Booster.predict`` itself on models that use
every decision LightGBM has (numerical splits with each missing-value type and
default direction, categorical bitsets, NaN, zero), on the probe rows the service
checks at load and on inputs chosen to break naive code generators. Then a real
training run (the pipeline, embedded) builds the objects, register keeps them, and
the service loads them, refuses tampered ones and falls back to LightGBM.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import orjson
import pytest
import urllib3

from modelrail.adapters.local.filesystem import FilesystemStore
from modelrail.adapters.local.signing import LocalManifestSigner
from modelrail.composition.bootstrap import bootstrap
from modelrail.domain.config import PipelineConfig
from modelrail.domain.features import FeatureSchema
from modelrail.domain.registry import sha256
from modelrail.kernel.events import DataUploaded
from modelrail.native import builder, loader, predictor_c, probes, trees
from modelrail.serving.predictor import NativeBooster
from modelrail.settings.process import Settings
from tests.conftest import installed, settings_env, wait_for
from tests.fakes import FakeDeployer
from tests.prerequisites import skip_or_fail

from .conftest import BUCKET, MODEL, ROOT, Server, post_json, read_records

# A double whose low 32 bits are all ones: code that marks "missing" with an int
# written over the double (TL2cgen's union Entry) reads it as missing.
ALL_ONES_LOW_WORD = float.fromhex("0x1.90fffffffffffp+7")  # 200.49999999999997


def need_cc() -> None:
    """A C compiler: the tests that build the compiled predictor need one."""
    skip_or_fail(None if shutil.which("cc") else "no C compiler (cc) to build the predictor")


@pytest.fixture
def cc() -> None:
    need_cc()


def synthetic(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three numeric features (with NaN and exact zeros), one categorical (0..11)."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.normal(size=rows),
            rng.uniform(150, 250, rows),
            rng.choice([0.0, 0.0, 1.0, 2.5, -3.0], rows) + rng.normal(0, 0.01, rows),
            rng.integers(0, 12, rows).astype(np.float64),
        ]
    )
    x[rng.random(rows) < 0.1, 0] = np.nan
    x[rng.random(rows) < 0.2, 2] = 0.0
    x[rng.random(rows) < 0.05, 3] = np.nan
    signal = x[:, 1] / 50 + np.nan_to_num(x[:, 0]) + np.isin(x[:, 3], [1, 4, 7, 9])
    return x, signal


def train(objective: str, rounds: int = 25, **params: Any) -> lightgbm.Booster:
    x, signal = synthetic(600, 7)
    if objective == "multiclass":
        label = np.digitize(signal, np.quantile(signal, [0.33, 0.66]))
        params["num_class"] = 3
    elif objective == "binary":
        label = (signal > np.median(signal)).astype(float)
    else:
        label = signal
    data = lightgbm.Dataset(x, label, categorical_feature=[3], free_raw_data=False)
    settings = {
        "objective": objective,
        "num_leaves": 15,
        "min_data_in_leaf": 5,
        "min_data_per_group": 5,
        "cat_smooth": 1,
        "seed": 3,
        "deterministic": True,
        "num_threads": 1,
        "verbosity": -1,
        **params,
    }
    return lightgbm.train(settings, data, num_boost_round=rounds)


def hard_rows(model: trees.TreeModel) -> np.ndarray:
    x, _ = synthetic(3000, 11)
    special = [
        math.nan,
        0.0,
        -0.0,
        1e-36,
        -1e-36,
        1e-35,
        ALL_ONES_LOW_WORD,
        -0.5,
        -1.0,
        12.0,
        31.0,
        32.0,
        1e300,
        -1e300,
    ]
    rng = np.random.default_rng(5)
    mask = rng.random(x.shape) < 0.1
    x[mask] = rng.choice(special, size=int(mask.sum()))
    probed = np.array(probes.probe_rows(model, [[0.5, 200.0, 0.0, 1.0]], 2000), dtype=np.float64)
    return np.ascontiguousarray(np.vstack([x, probed]))


class Reference:
    """LightGBM's ``Booster`` at one iteration count, as ``builder.build`` checks against."""

    def __init__(self, booster: lightgbm.Booster, num_iteration: int | None) -> None:
        self.booster, self.num_iteration = booster, num_iteration

    def predict(self, rows: np.ndarray) -> Any:
        return self.booster.predict(rows, num_iteration=self.num_iteration, num_threads=1)


def loaded(built: builder.Built, model: trees.TreeModel, directory: Path) -> dict[str, Any]:
    """Each built object, loaded from a file as the service loads it."""
    boosters = {}
    for predictor in built.predictors:
        path = directory / f"{id(built)}-{predictor.build.file}"
        path.write_bytes(predictor.library)
        boosters[predictor.build.name] = loader.CompiledBooster(
            path, model.num_features, model.trees_per_iteration
        )
    return boosters


def expected_builds() -> set[str]:
    """Every build where the CPU can run it (the vector one needs AVX2)."""
    return {b.name for b in builder.BUILDS if set(b.requires) <= loader.cpu_features()}


@pytest.mark.parametrize(
    ("objective", "params"),
    [
        ("multiclass", {}),
        ("binary", {}),
        ("binary", {"sigmoid": 0.7}),
        ("regression", {}),
        ("regression", {"zero_as_missing": True}),
        ("regression", {"use_missing": False}),
        ("huber", {}),
        ("regression_l1", {}),
        ("quantile", {"alpha": 0.7}),
    ],
)
def test_compiled_predictions_are_lightgbms_bit_for_bit(
    cc: None, tmp_path: Path, objective: str, params: dict[str, Any]
) -> None:
    """Both builds (vector code as AVX2 and, portable, lowered to SSE2)."""
    booster = train(objective, **params)
    text = booster.model_to_string()
    model = trees.parse(text)
    rows = hard_rows(model)
    for num_iteration in (None, 10):
        reference = Reference(booster, num_iteration)
        built = builder.build(text.encode(), num_iteration, reference, [], "cc")
        boosters = loaded(built, model, tmp_path)
        assert set(boosters) == expected_builds(), built.not_built
        for ours in boosters.values():
            assert_same_doubles(ours, rows, reference.predict(rows))


def assert_same_doubles(ours: loader.CompiledBooster, rows: np.ndarray, theirs: Any) -> None:
    """All rows at once (the vector code, rows a multiple of four or not) and in
    batches too small for it (the row code)."""
    assert ours.predict(rows).view(np.uint64).tolist() == theirs.view(np.uint64).tolist()
    assert ours.predict(rows[:-1]).view(np.uint64).tolist() == theirs[:-1].view(np.uint64).tolist()
    for size in range(1, predictor_c.LANES_FROM):
        small = np.concatenate([ours.predict(rows[i : i + size]) for i in range(0, 300, size)])
        assert small.view(np.uint64).tolist() == theirs[: len(small)].view(np.uint64).tolist()


def test_trees_of_more_than_64_leaves_are_exact_too(cc: None, tmp_path: Path) -> None:
    """Such trees are generated as nested ifs, not branch-free."""
    booster = train("multiclass", rounds=4, num_leaves=120, min_data_in_leaf=2)
    text = booster.model_to_string()
    model = trees.parse(text)
    assert max(tree.num_leaves for tree in model.trees) > 64
    built = builder.build(text.encode(), None, Reference(booster, None), [], "cc")
    rows = hard_rows(model)
    for ours in loaded(built, model, tmp_path).values():
        assert_same_doubles(ours, rows, booster.predict(rows, num_threads=1))


def test_a_value_with_all_ones_low_bits_is_a_value_not_a_missing_one(
    cc: None, tmp_path: Path
) -> None:
    booster = train("regression")
    text = booster.model_to_string()
    model = trees.parse(text)
    built = builder.build(text.encode(), None, Reference(booster, None), [], "cc")
    rows = np.array([[0.1, ALL_ONES_LOW_WORD, 1.0, 3.0], [0.1, math.nan, 1.0, 3.0]] * 4)
    expected = booster.predict(rows, num_threads=1)
    assert expected[0] != expected[1]
    for ours in loaded(built, model, tmp_path).values():
        assert_same_doubles(ours, rows, expected)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"objective": "regression", "linear_tree": True}, "linear trees"),
        (
            {
                "objective": "regression",
                "boosting": "rf",
                "bagging_freq": 1,
                "bagging_fraction": 0.5,
            },
            "average_output",
        ),
        ({"objective": "poisson"}, "objective 'poisson'"),
        ({"objective": "regression", "reg_sqrt": True}, "objective 'regression sqrt'"),
    ],
)
def test_models_it_cannot_reproduce_are_not_built(
    cc: None, params: dict[str, Any], reason: str
) -> None:
    x, signal = synthetic(300, 2)
    booster = lightgbm.train(
        {"verbosity": -1, "num_threads": 1, **params},
        lightgbm.Dataset(np.abs(x[:, :3]), np.abs(signal)),
        num_boost_round=3,
    )
    built = builder.build(booster.model_to_string().encode(), None, booster, [], "cc")
    assert built.predictors == ()
    [why] = built.not_built
    assert why.startswith("not compiled: ")
    assert reason in why
    assert built.record() == {
        "builds": [],
        "not_built": [why],
        "reader": "not built",
    }


def test_what_is_not_built_says_why(cc: None) -> None:
    booster = train("binary", rounds=3)
    text = booster.model_to_string().encode()

    missing = builder.build(text, None, booster, [], "/nonexistent/cc")
    failing = builder.build(text, None, booster, [], "cc -fno-such-option-anywhere")
    # A reference with other trees: the probe rows tell them apart.
    other = builder.build(text, None, train("binary", rounds=4), [], "cc")

    assert missing == builder.Built((), ("no C compiler: '/nonexistent/cc' was not found",))
    assert failing.predictors == ()
    assert [why.split(":")[:2] for why in failing.not_built] == [
        ["avx2", " cc failed"],
        ["portable", " cc failed"],
    ]
    assert other.predictors == ()
    assert all(re.search(r"\d+ of \d+ probe rows differ", why) for why in other.not_built)


def test_verify_refuses_a_library_that_differs(cc: None, tmp_path: Path) -> None:
    """The load-time check can fail: a library built from other trees is caught."""
    booster = train("regression", rounds=20)
    text = booster.model_to_string()
    model_a = trees.parse(text)
    built = builder.build(text.encode(), None, booster, [], "cc")
    other = train("regression", rounds=21)
    reference = NativeBooster(other.model_to_string().encode(), num_iteration=None)
    rows = probes.probe_rows(model_a, [[0.0, 200.0, 0.0, 1.0]], 100)
    for ours in loaded(built, model_a, tmp_path).values():
        with pytest.raises(loader.CompileError, match="probe rows differ"):
            loader.verify(ours, reference, rows)


def test_an_answer_that_is_not_a_finite_number_is_refused_not_sent(
    cc: None, tmp_path: Path
) -> None:
    """Leaves whose sum overflows give no answer: every predictor raises instead, the
    objects built before the C checked its answers too."""
    booster = train("regression", rounds=2)

    def huge(match: re.Match[str]) -> str:
        return "leaf_value=" + " ".join("1e308" for _ in match.group(1).split())

    text = re.sub(r"^leaf_value=(.*)$", huge, booster.model_to_string(), flags=re.M)
    text = re.sub(r"^tree_sizes=.*\n", "", text, flags=re.M)  # the trees' byte sizes changed
    model = trees.parse(text)
    source = predictor_c.generate(model, None)
    unchecked = "\n".join(
        line for line in source.splitlines() if "isfinite(out[i])" not in line
    ).replace("const int modelrail_checks_finite = 1;", "")
    rows = np.zeros((5, model.num_features))
    predictors: list[Any] = [NativeBooster(text.encode(), num_iteration=None)]
    for name, code in (("checked", source), ("unchecked", unchecked)):
        (tmp_path / f"{name}.c").write_text(code)
        library = tmp_path / f"{name}.so"
        compiler = subprocess.run(
            ["cc", *builder.FLAGS, "-o", str(library), str(tmp_path / f"{name}.c"), "-lm"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert compiler.returncode == 0, compiler.stderr
        predictors.append(
            loader.CompiledBooster(library, model.num_features, model.trees_per_iteration)
        )
    for predictor in predictors:
        for batch in (rows[:1], rows):  # the row code and the vector code
            with pytest.raises(ArithmeticError, match="non-finite prediction"):
                predictor.predict(batch)


# -- a training run, register, and the service ---------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainedVersion:
    """penguins v1, trained and registered by the pipeline (embedded), under ``home``."""

    home: Path
    manifest: dict[str, Any]
    model_text: bytes
    train_output: dict[str, Any]

    def copy_store(self, directory: Path) -> FilesystemStore:
        """A copy of the artifact bucket, to tamper with."""
        shutil.copytree(self.home / "buckets", directory)
        return FilesystemStore(directory, BUCKET)

    @property
    def signer(self) -> LocalManifestSigner:
        """What signed the version: the key file in ``home``."""
        return LocalManifestSigner.in_home(self.home)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedVersion:
    """The pipeline's own run on the penguins, with a compiler: 15 rounds at a higher
    learning rate, so that building 45 trees takes seconds, not minutes."""
    need_cc()
    directory = tmp_path_factory.mktemp("trained")
    config = (ROOT / "pipeline.toml").read_text()
    config = re.sub(
        r"^contract = .*$",
        f'contract = "{ROOT / "schemas" / "datasets" / "penguins.json"}"',
        config,
        flags=re.M,
    )
    config = re.sub(r"^num_boost_round = .*$", "num_boost_round = 15", config, flags=re.M)
    config = re.sub(r"^learning_rate = .*$", "learning_rate = 0.3", config, flags=re.M)
    (directory / "pipeline.toml").write_text(config)
    home = directory / "home"
    settings = Settings.from_env(settings_env(home, MODELRAIL_COMPILER="cc"))
    container = installed(
        bootstrap(settings, deployer_factory=lambda _model: FakeDeployer()),
        directory / "pipeline.toml",
    )
    data = container.storage.bucket(settings.data_bucket)
    generation = data.write(
        "uploads/penguins/penguins.csv", (ROOT / "data" / "penguins.csv").read_bytes()
    )
    upload = DataUploaded(
        bucket=data.bucket, name="uploads/penguins/penguins.csv", generation=generation
    )
    container.bus.publish(
        "data-uploaded", orjson.dumps(upload.to_body()), {"eventType": "OBJECT_FINALIZE"}
    )
    container.bus.run_until_idle()  # type: ignore[attr-defined]
    registry = container.registry
    assert registry.versions(MODEL) == [1], container.runs.runs()
    [run] = container.runs.runs()
    train_record = container.runs.stage_record(run.run_id, "train")
    assert train_record is not None
    loaded_version = registry.load(MODEL, 1)
    return TrainedVersion(
        home,
        loaded_version.manifest.to_json(),
        loaded_version.model_text,
        dict(train_record.output),
    )


def test_a_training_run_builds_verified_predictors_that_register_keeps(
    trained: TrainedVersion,
) -> None:
    manifest = trained.manifest
    builds = manifest["compiled"]["builds"]

    assert {build["build"] for build in builds} == expected_builds()
    assert trained.train_output["compiled"] == [build["build"] for build in builds]
    for build in builds:
        assert build["file"] == f"predictor-{build['build']}.so"
        assert manifest["files"][build["file"]]["sha256"] == build["sha256"]
        assert "-O2" in build["flags"]
        assert ("-mavx2" in build["flags"]) == (build["requires"] == ["avx2"])
    if "avx2" not in loader.cpu_features():
        assert any("this CPU lacks avx2" in why for why in manifest["compiled"]["not_built"])


def served(trained: TrainedVersion, store: Any, **settings: Any) -> Any:
    from modelrail.serving.app import create_app

    config = {
        "store": store,
        "signer": trained.signer,
        "model_name": MODEL,
        "model_version": 1,
        **settings,
    }
    return create_app(config).test_client()


@pytest.fixture
def serving_log() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("modelrail.serving")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def events(records: list[logging.LogRecord], event: str) -> list[logging.LogRecord]:
    return [r for r in records if getattr(r, "fields", {}).get("event") == event]


def test_the_service_answers_with_the_trained_predictor_bit_for_bit(
    trained: TrainedVersion, serving_log: list[logging.LogRecord]
) -> None:
    store = FilesystemStore(trained.home / "buckets", BUCKET)
    fast = served(trained, store, predictor="compiled")
    plain = served(trained, store)
    records, _ = read_records(PipelineConfig.load(ROOT / "pipeline.toml"))
    body = {"instances": [*records, {**records[0], "island": "Atlantis"}]}

    assert fast.get("/readyz").get_json()["predictor"] == "compiled"
    assert plain.get("/readyz").get_json()["predictor"] == "lightgbm"
    [used] = events(serving_log, "predictor_compiled")
    preferred = next(b.name for b in builder.BUILDS if b.name in expected_builds())
    assert used.fields["build"] == preferred  # type: ignore[attr-defined]
    answer = fast.post("/predict", json=body).get_json()
    assert answer == plain.post("/predict", json=body).get_json()
    assert answer["warnings"]  # the unseen island is flagged, as before
    schema = FeatureSchema.from_dict(trained.manifest["features"])
    booster = lightgbm.Booster(model_str=trained.model_text.decode())
    expected = booster.predict(schema.encode_records(body["instances"]), num_threads=1)
    got = [list(p["probabilities"].values()) for p in answer["predictions"]]
    assert got == expected.tolist()


def test_the_service_reads_the_common_body_with_the_trained_reader(
    trained: TrainedVersion, serving_log: list[logging.LogRecord]
) -> None:
    assert trained.manifest["compiled"]["reader"] == "built"
    store = FilesystemStore(trained.home / "buckets", BUCKET)
    fast = served(trained, store, predictor="compiled")
    plain = served(trained, store)
    records, _ = read_records(PipelineConfig.load(ROOT / "pipeline.toml"))
    common = orjson.dumps({"instances": [r for r in records if None not in r.values()]})

    assert fast.get("/readyz").get_json()["reader"] == "native"
    assert plain.get("/readyz").get_json()["reader"] == "python"
    [used] = events(serving_log, "predictor_compiled")
    assert used.fields["reader"] is True  # type: ignore[attr-defined]
    # The reader (not the Python decoder, which it would fall back to) reads the body.
    reader = fast.application.extensions["modelrail"].predictor.booster.read
    assert reader(common, 10_000) is not None
    headers = {"Content-Type": "application/json"}
    assert (
        fast.post("/predict", data=common, headers=headers).get_json()
        == plain.post("/predict", data=common, headers=headers).get_json()
    )


def test_without_avx2_the_service_loads_the_portable_build(
    trained: TrainedVersion,
    serving_log: list[logging.LogRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if "avx2" not in expected_builds():
        pytest.skip("this CPU has no AVX2: the training run built the portable object only")
    monkeypatch.setattr(loader, "cpu_features", frozenset)

    store = FilesystemStore(trained.home / "buckets", BUCKET)
    client = served(trained, store, predictor="compiled")

    assert client.get("/readyz").get_json()["predictor"] == "compiled"
    [used] = events(serving_log, "predictor_compiled")
    assert used.fields["build"] == "portable"  # type: ignore[attr-defined]
    assert "refused predictor-avx2.so: this CPU lacks avx2" in used.getMessage()


def tamper_file(store: FilesystemStore, file: str) -> None:
    key = f"models/{MODEL}/versions/1/{file}"
    library = bytearray(store.read(key).data)
    library[len(library) // 2] ^= 0xFF
    store.write(key, bytes(library))


@pytest.mark.fault
def test_a_tampered_predictor_is_refused_and_lightgbm_answers(
    trained: TrainedVersion, serving_log: list[logging.LogRecord], tmp_path: Path
) -> None:
    store = trained.copy_store(tmp_path / "buckets")
    files = [build["file"] for build in trained.manifest["compiled"]["builds"]]
    for file in files:
        tamper_file(store, file)
    body = {"instances": trained.manifest["examples"]}

    client = served(trained, store, predictor="compiled")

    assert client.get("/readyz").get_json()["predictor"] == "lightgbm"
    assert client.get("/readyz").get_json()["reader"] == "python"  # the object carried it
    assert not events(serving_log, "predictor_compiled")
    [refused] = events(serving_log, "predictor_not_compiled")
    assert refused.levelno == logging.WARNING
    message = refused.getMessage()
    assert "keeps LightGBM's predictor" in message
    for file in files:
        refusal = rf"{re.escape(file)}: .*does not match the sha256 in its manifest"
        assert re.search(refusal, message)
    assert client.post("/predict", json=body).status_code == 200


@pytest.mark.fault
def test_a_predictor_replaced_with_its_manifest_rewritten_refuses_the_version(
    trained: TrainedVersion, tmp_path: Path
) -> None:
    # Whoever can write the bucket replaces a compiled predictor and rewrites its sha256
    # in the manifest to match: the manifest no longer matches its signature.
    store = trained.copy_store(tmp_path / "buckets")
    key = f"models/{MODEL}/versions/1/manifest.json"
    manifest = orjson.loads(store.read(key).data)
    for build in manifest["compiled"]["builds"]:
        tamper_file(store, build["file"])
        data = store.read(f"models/{MODEL}/versions/1/{build['file']}").data
        build["sha256"] = manifest["files"][build["file"]]["sha256"] = sha256(data)
    store.write(key, orjson.dumps(manifest))

    client = served(trained, store, predictor="compiled")

    detail = client.get("/readyz").get_json()["detail"]
    assert "manifest.json does not match its signature" in detail


def test_a_version_without_compiled_predictors_keeps_lightgbm(
    make_client: Any, serving_log: list[logging.LogRecord]
) -> None:
    client = make_client(predictor="compiled")  # registered without any

    assert client.get("/readyz").get_json()["predictor"] == "lightgbm"
    [refused] = events(serving_log, "predictor_not_compiled")
    assert "no compiled predictor was built (the version has none)" in refused.getMessage()


def test_the_server_answers_compiled_from_its_first_request(
    trained: TrainedVersion, start_server: Callable[..., Server]
) -> None:
    """Loaded and verified in the master before the port is bound: no answer ever
    comes from LightGBM, and the workers inherit the object (one load, one line)."""
    server = start_server(
        1,
        home=trained.home,
        MODELRAIL_WORKERS="2",
        MODELRAIL_PREDICTOR="compiled",
    )
    answers: list[str] = []

    def answered() -> bool:
        try:
            response = urllib3.request("GET", server.url + "/readyz", retries=False)
        except urllib3.exceptions.HTTPError:
            return False
        answers.append(response.json()["predictor"])
        return len(answers) >= 20

    wait_for(answered, "20 readiness answers")
    assert set(answers) == {"compiled"}
    assert server.log.read_text().count("uses the compiled predictor") == 1
    status, _ = post_json(server.url + "/predict", {"instances": trained.manifest["examples"]})
    assert status == 200


def test_the_predictor_setting_is_checked() -> None:
    from modelrail.kernel.errors import ConfigError
    from modelrail.settings.service import ServiceSettings

    base = {"MODELRAIL_MODEL_VERSION": "1"}
    assert ServiceSettings.from_env(base).predictor == "lightgbm"
    assert ServiceSettings.from_env({**base, "MODELRAIL_PREDICTOR": "compiled"}).predictor == (
        "compiled"
    )
    with pytest.raises(ConfigError, match=r"MODELRAIL_PREDICTOR must be lightgbm\|compiled"):
        ServiceSettings.from_env({**base, "MODELRAIL_PREDICTOR": "lleaves"})
