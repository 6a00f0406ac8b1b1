"""The compiled predictor: the same doubles as LightGBM, or not used at all.

Exactness is checked against ``lightgbm.Booster.predict`` itself on models that use
every decision LightGBM has (numerical splits with each missing-value type and
default direction, categorical bitsets, NaN, zero), on the probe rows the service
checks at load and on inputs chosen to break naive code generators.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pytest
import urllib3

from modelrail.serving import codegen, compiled
from modelrail.serving.predictor import NativeBooster
from tests.conftest import STATE_DEADLINE_S, wait_for
from tests.prerequisites import skip_or_fail

from .conftest import MODEL, RegisteredModels, Server, post_json

# A double whose low 32 bits are all ones: code that marks "missing" with an int
# written over the double (TL2cgen's union Entry) reads it as missing.
ALL_ONES_LOW_WORD = float.fromhex("0x1.90fffffffffffp+7")  # 200.49999999999997


@pytest.fixture
def cc() -> None:
    """A C compiler: the tests that build the compiled predictor need one."""
    skip_or_fail(None if shutil.which("cc") else "no C compiler (cc) to build the predictor")


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


def hard_rows(model: codegen.TreeModel) -> np.ndarray:
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
    probes = np.array(codegen.probe_rows(model, [0.5, 200.0, 0.0, 1.0], 2000), dtype=np.float64)
    return np.ascontiguousarray(np.vstack([x, probes]))


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
    booster = train(objective, **params)
    model = codegen.parse(booster.model_to_string())
    rows = hard_rows(model)
    for num_iteration in (None, 10):
        library = compiled.build(codegen.generate(model, num_iteration), tmp_path, "cc")
        ours = compiled.CompiledBooster(library, model.num_features, model.trees_per_iteration)
        theirs = booster.predict(rows, num_iteration=num_iteration, num_threads=1)
        assert_same_doubles(ours, rows, theirs)


def assert_same_doubles(ours: compiled.CompiledBooster, rows: np.ndarray, theirs: Any) -> None:
    """All rows at once (the vector code, rows a multiple of four or not) and in
    batches too small for it (the row code)."""
    assert ours.predict(rows).view(np.uint64).tolist() == theirs.view(np.uint64).tolist()
    assert ours.predict(rows[:-1]).view(np.uint64).tolist() == theirs[:-1].view(np.uint64).tolist()
    for size in range(1, codegen.LANES_FROM):
        small = np.concatenate([ours.predict(rows[i : i + size]) for i in range(0, 300, size)])
        assert small.view(np.uint64).tolist() == theirs[: len(small)].view(np.uint64).tolist()


@pytest.mark.parametrize("objective", ["multiclass", "binary"])
def test_the_vector_code_is_exact_without_avx2_too(
    cc: None, tmp_path: Path, objective: str
) -> None:
    """Built without -mavx2 (as on a CPU without it), the compiler lowers the same
    vector code to SSE2: slower, the same doubles."""
    booster = train(objective, zero_as_missing=True)
    model = codegen.parse(booster.model_to_string())
    generic = [flag for flag in compiled.default_flags() if flag != "-mavx2"]
    library = compiled.build(codegen.generate(model, None), tmp_path, "cc", generic)
    ours = compiled.CompiledBooster(library, model.num_features, model.trees_per_iteration)
    rows = hard_rows(model)
    assert_same_doubles(ours, rows, booster.predict(rows, num_threads=1))


def test_trees_of_more_than_64_leaves_are_exact_too(cc: None, tmp_path: Path) -> None:
    """Such trees are generated as nested ifs, not branch-free."""
    booster = train("multiclass", rounds=4, num_leaves=120, min_data_in_leaf=2)
    model = codegen.parse(booster.model_to_string())
    assert max(tree.num_leaves for tree in model.trees) > 64
    library = compiled.build(codegen.generate(model, None), tmp_path, "cc")
    ours = compiled.CompiledBooster(library, model.num_features, model.trees_per_iteration)
    rows = hard_rows(model)
    assert_same_doubles(ours, rows, booster.predict(rows, num_threads=1))


def test_a_value_with_all_ones_low_bits_is_a_value_not_a_missing_one(
    cc: None, tmp_path: Path
) -> None:
    booster = train("regression")
    model = codegen.parse(booster.model_to_string())
    library = compiled.build(codegen.generate(model, None), tmp_path, "cc")
    ours = compiled.CompiledBooster(library, model.num_features, 1)
    rows = np.array([[0.1, ALL_ONES_LOW_WORD, 1.0, 3.0], [0.1, math.nan, 1.0, 3.0]] * 4)
    expected = booster.predict(rows, num_threads=1)
    assert expected[0] != expected[1]
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
def test_models_it_cannot_reproduce_are_refused(params: dict[str, Any], reason: str) -> None:
    x, signal = synthetic(300, 2)
    booster = lightgbm.train(
        {"verbosity": -1, "num_threads": 1, **params},
        lightgbm.Dataset(np.abs(x[:, :3]), np.abs(signal)),
        num_boost_round=3,
    )
    with pytest.raises(codegen.Unsupported, match=reason):
        codegen.parse(booster.model_to_string())


def test_the_build_child_explains_a_refusal(cc: None, tmp_path: Path) -> None:
    x, signal = synthetic(300, 2)
    linear = lightgbm.train(
        {"objective": "regression", "linear_tree": True, "verbosity": -1},
        lightgbm.Dataset(np.abs(x[:, :3]), signal),
        num_boost_round=3,
    )
    with pytest.raises(compiled.CompileError, match=r"^not compiled: linear trees$"):
        compiled.build_in_child(linear.model_to_string().encode(), None, tmp_path, "cc")
    plain = train("binary", rounds=4).model_to_string()
    library = compiled.build_in_child(plain.encode(), 2, tmp_path, "cc")
    assert library == compiled.build_model(plain, 2, tmp_path, "cc")
    assert library.parent == tmp_path


def test_verify_refuses_a_library_that_differs(cc: None, tmp_path: Path) -> None:
    """The load-time check can fail: a library built from other trees is caught."""
    model_a = codegen.parse(train("regression", rounds=20).model_to_string())
    other = train("regression", rounds=21)
    library = compiled.build(codegen.generate(model_a, None), tmp_path, "cc")
    ours = compiled.CompiledBooster(library, 4, 1)
    reference = NativeBooster(other.model_to_string().encode(), num_iteration=None)
    rows = codegen.probe_rows(model_a, [0.0, 200.0, 0.0, 1.0], 100)
    with pytest.raises(compiled.CompileError, match="probe rows differ"):
        compiled.verify(ours, reference, rows)


def test_build_compiles_once_and_explains_a_missing_compiler(cc: None, tmp_path: Path) -> None:
    model = codegen.parse(train("binary", rounds=3).model_to_string())
    source = codegen.generate(model, None)
    library = compiled.build(source, tmp_path, "cc")
    stamp = library.stat().st_mtime_ns
    assert compiled.build(source, tmp_path, "cc") == library
    assert library.stat().st_mtime_ns == stamp
    assert [p.suffix for p in tmp_path.iterdir() if p.suffix != ".lock"] == [".so"]
    assert tmp_path.stat().st_mode & 0o022 == 0
    with pytest.raises(compiled.CompileError, match="no C compiler"):
        compiled.build(source, tmp_path / "other", "/nonexistent/cc")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(compiled.CompileError, match="writable by no one else"):
        compiled.build(source, shared, "cc")
    with pytest.raises(compiled.CompileError, match="failed"):
        compiled.build("this is not C", tmp_path / "other", "cc")
    assert not any(p.suffix == ".so" for p in (tmp_path / "other").iterdir())


def test_the_service_switches_to_the_compiled_predictor(
    cc: None, make_client: Callable[..., Any], models: RegisteredModels, tmp_path: Path
) -> None:
    plain = make_client(model_version=2)
    client = make_client(model_version=2, predictor="compiled", compile_cache=str(tmp_path))
    assert client.get("/readyz").get_json()["predictor"] == "lightgbm"
    thread = client.application.wsgi_app.start_compiling()
    thread.join(STATE_DEADLINE_S)  # the build's own time on a busy machine, bounded
    assert not thread.is_alive(), f"the build outlasted {STATE_DEADLINE_S:.0f} s"
    assert client.get("/readyz").get_json()["predictor"] == "compiled"
    assert client.get(f"/v1/models/{MODEL}").get_json()["predictor"] == "compiled"
    body = {"instances": [*models.records[:50], {**models.records[0], "island": "Atlantis"}]}
    compiled_answer = client.post("/predict", json=body).get_json()
    assert compiled_answer == plain.post("/predict", json=body).get_json()
    assert compiled_answer["warnings"]  # the unseen island is flagged, as before


def test_without_a_compiler_the_service_keeps_lightgbm(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = make_client(
        predictor="compiled", compile_cache=str(tmp_path), compiler="/nonexistent/cc"
    )
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("modelrail.serving")
    logger.addHandler(handler)
    try:
        client.application.wsgi_app.start_compiling().join(STATE_DEADLINE_S)
    finally:
        logger.removeHandler(handler)
    assert client.get("/readyz").get_json()["predictor"] == "lightgbm"
    [refused] = [r for r in records if r.fields["event"] == "predictor_not_compiled"]  # type: ignore[attr-defined]
    assert refused.levelno == logging.WARNING
    assert "keeps LightGBM's predictor: no C compiler" in refused.getMessage()


def test_every_worker_compiles_after_the_fork(
    cc: None,
    start_server: Callable[..., Server],
    models: RegisteredModels,
    tmp_path: Path,
) -> None:
    server = start_server(
        2,
        MODELRAIL_WORKERS="2",
        MODELRAIL_PREDICTOR="compiled",
        MODELRAIL_COMPILE_CACHE=str(tmp_path / "cache"),
    )

    def both_switched() -> bool:
        return server.log.read_text().count("switched to the compiled predictor") == 2

    wait_for(both_switched, "two workers to switch to the compiled predictor")
    # One build for both workers (the second waits for the first's lock).
    assert len(list((tmp_path / "cache").glob("*.so"))) == 1
    answers = {
        urllib3.request("GET", server.url + "/readyz", retries=False).json()["predictor"]
        for _ in range(20)
    }
    assert answers == {"compiled"}
    records = models.records[:20]
    status, body = post_json(server.url + "/predict", {"instances": records})
    assert status == 200
    expected = models.boosters[2].predict(
        models.schema.encode_records(records), num_iteration=35, num_threads=1
    )
    got = [list(p["probabilities"].values()) for p in body["predictions"]]
    assert got == expected.tolist()


def test_the_predictor_setting_is_checked() -> None:
    from modelrail.errors import ConfigError
    from modelrail.service_settings import ServiceSettings

    base = {"MODELRAIL_MODEL_VERSION": "1"}
    assert ServiceSettings.from_env(base).predictor == "lightgbm"
    chosen = ServiceSettings.from_env({**base, "MODELRAIL_PREDICTOR": "compiled", "CC": "clang"})
    assert (chosen.predictor, chosen.compiler) == ("compiled", "clang")
    with pytest.raises(ConfigError, match=r"MODELRAIL_PREDICTOR must be lightgbm\|compiled"):
        ServiceSettings.from_env({**base, "MODELRAIL_PREDICTOR": "lleaves"})
