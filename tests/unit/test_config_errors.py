"""Every kind of mistake in pipeline.toml or a dataset contract is one ConfigError at
load time whose message names the problem and the values that are allowed."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelrail.domain.config import PipelineConfig
from modelrail.kernel.errors import ConfigError
from tests.conftest import REPO

CONTRACT = json.loads((REPO / "schemas" / "datasets" / "penguins.json").read_text())
PIPELINE = (REPO / "pipeline.toml").read_text()

Edit = Callable[[dict[str, Any]], None]


def _column(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda spec: next(c for c in spec["columns"] if c["name"] == name)


island, year, mass = _column("island"), _column("year"), _column("body_mass_g")


def _dated_feature(spec: dict[str, Any]) -> None:
    column = year(spec)
    column.clear()
    column.update(name="year", type="datetime")


def _load(tmp_path: Path, contract: dict[str, Any] | str, pipeline: str = PIPELINE) -> None:
    (tmp_path / "schemas" / "datasets").mkdir(parents=True)
    text = contract if isinstance(contract, str) else json.dumps(contract)
    (tmp_path / "schemas" / "datasets" / "penguins.json").write_text(text)
    (tmp_path / "pipeline.toml").write_text(pipeline)
    PipelineConfig.load(tmp_path / "pipeline.toml")


CONTRACT_MISTAKES: list[tuple[str, Edit, list[str]]] = [
    (
        "unknown-type",
        lambda s: island(s).update(type="string"),
        ["columns[1].type", "'string' is not one of", "'category'", "'datetime'", "'text'"],
    ),
    (
        "unknown-field",
        lambda s: year(s).update(feature=False),
        ["columns[7]", "'feature' was unexpected", "allowed: name, type, role, nullable"],
    ),
    (
        "unknown-role",
        lambda s: year(s).update(role="id"),
        ["columns[7].role", "'id' is not one of ['feature', 'ignore']"],
    ),
    (
        "missing-type",
        lambda s: island(s).pop("type"),
        ["columns[1]", "'type' is a required property", "allowed: number, integer, category"],
    ),
    (
        "category-without-categories",
        lambda s: island(s).pop("categories"),
        ["category column 'island' must list its 'categories'"],
    ),
    (
        "target-not-a-column",
        lambda s: s.update(target="kind"),
        ["target 'kind' is not a column", "'species', 'island'"],
    ),
    (
        "datetime-as-feature",
        lambda s: year(s).update(type="datetime", role="feature", min=None, max=None),
        ["columns[7].min: None is not of type 'number'"],
    ),
    (
        "range-on-a-date",
        lambda s: year(s).update(type="datetime", role="ignore"),
        ["column 'year': 'min'/'max' are only for number and integer columns"],
    ),
    (
        "date-as-a-feature",
        _dated_feature,
        ["column 'year': a datetime column cannot be a feature", '"role": "ignore"'],
    ),
    (
        "upside-down-range",
        lambda s: mass(s).update(min=7000, max=2000),
        ["column 'body_mass_g': min 7000 is above max 2000"],
    ),
    (
        "unknown-top-level-field",
        lambda s: s.update(rows=10),
        ["'rows' was unexpected", "allowed: $schema, name, description, target, min_rows"],
    ),
    (
        "missing-target-limit-too-high",
        lambda s: s.update(max_missing_target_fraction=0.9),
        ["max_missing_target_fraction: 0.9 is greater than the maximum of 0.5"],
    ),
]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [case[1:] for case in CONTRACT_MISTAKES],
    ids=[case[0] for case in CONTRACT_MISTAKES],
)
def test_a_contract_mistake_names_itself_and_what_is_allowed(
    tmp_path: Path, edit: Edit, expected: list[str]
) -> None:
    contract = json.loads(json.dumps(CONTRACT))
    edit(contract)

    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, contract)

    message = str(raised.value)
    assert message.startswith("invalid dataset contract ")
    for part in expected:
        assert part in message, message


def test_a_contract_that_is_not_json_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"penguins\.json is not valid JSON"):
        _load(tmp_path, '{"name": "penguins",')


PIPELINE_MISTAKES: list[tuple[str, tuple[str, str], list[str]]] = [
    (
        "log-rate-above-one",
        ("log_rate = 0.05", "log_rate = 5"),
        ["monitoring.log_rate", "5 is greater than the maximum of 1"],
    ),
    (
        "metric-not-computed",
        ('name = "accuracy"', 'name = "auc"'),
        ["gate metric 'auc' is not computed for multiclass", "allowed: multi_logloss, accuracy"],
    ),
    (
        "no-direction",
        ('direction = "higher"\n', ""),
        ["gate.metrics[0]: 'direction' is a required property; allowed: higher, lower"],
    ),
    (
        "wrong-direction",
        ('direction = "higher"', 'direction = "lower"'),
        ["gate metric 'accuracy': direction must be 'higher'"],
    ),
    (
        "no-threshold",
        ("min = 0.90\nmax_change_abs = 0.03", ""),
        ["gate metric 'accuracy' sets no threshold", "allowed: min, max, max_change_abs"],
    ),
    (
        "unknown-lightgbm-parameter",
        ("num_leaves = 15", "num_leafs = 15"),
        ["'num_leafs' is not a LightGBM parameter; did you mean", "num_leaves"],
    ),
    (
        "parameter-set-by-modelrail",
        ("num_leaves = 15", 'num_leaves = 15\nobjective = "binary"'),
        ["'objective' is set by modelrail from [model] objective"],
    ),
    (
        "unknown-objective",
        ('objective = "multiclass"', 'objective = "ranking"'),
        ["model.objective: 'ranking' is not one of ['binary', 'multiclass', 'regression']"],
    ),
    (
        "unknown-training-field",
        ("seed = 42", "seed = 42\nepochs = 3"),
        ["training: Additional properties are not allowed ('epochs' was unexpected)", "seed"],
    ),
    (
        "objective-against-target",
        ('objective = "multiclass"', 'objective = "binary"'),
        ["the target 'species' is a category column with 3 categories", "binary target must"],
    ),
    (
        "fraction-out-of-range",
        ("holdout_fraction = 0.2", "holdout_fraction = 0.7"),
        ["training.holdout_fraction: 0.7 is greater than or equal to the maximum of 0.5"],
    ),
    (
        "model-name-not-a-path",
        ('name = "penguins"', 'name = "../penguins"'),
        ["model.name: '../penguins' does not match"],
    ),
    (
        "vertex-switch-not-a-boolean",
        ("model_registry = false", 'model_registry = "yes"'),
        ["vertex.model_registry: 'yes' is not of type 'boolean'"],
    ),
    (
        "vertex-unknown-field",
        ("model_registry = false", "model_registry = false\nendpoint = true"),
        ["vertex: Additional properties are not allowed ('endpoint' was unexpected)"],
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"),
    [case[1:] for case in PIPELINE_MISTAKES],
    ids=[case[0] for case in PIPELINE_MISTAKES],
)
def test_a_pipeline_mistake_names_itself_and_what_is_allowed(
    tmp_path: Path, change: tuple[str, str], expected: list[str]
) -> None:
    old, new = change
    assert old in PIPELINE
    pipeline = PIPELINE.replace(old, new, 1)

    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, CONTRACT, pipeline)

    message = str(raised.value)
    assert message.startswith("invalid pipeline config ")
    for part in expected:
        assert part in message, message


def test_vertex_names_its_model_after_the_model_so_the_name_must_be_a_vertex_id(
    tmp_path: Path,
) -> None:
    named = PIPELINE.replace('name = "penguins"', 'name = "Penguins.v2"', 1)
    _load(tmp_path / "off", CONTRACT, named)  # any registry name, without Vertex AI

    with pytest.raises(ConfigError) as raised:
        _load(
            tmp_path / "on",
            CONTRACT,
            named.replace("model_registry = false", "model_registry = true"),
        )

    assert "[vertex] model_registry names the Vertex AI model after [model] name" in str(
        raised.value
    )
    assert "'Penguins.v2' is not a Vertex model id (lowercase letters, digits" in str(raised.value)


def test_the_bundled_files_load(tmp_path: Path) -> None:
    _load(tmp_path, CONTRACT)  # the cases above fail for their mistake alone


def test_a_broken_config_is_refused_when_added_and_nothing_is_installed(
    tmp_path: Path,
) -> None:
    from modelrail.composition.bootstrap import bootstrap
    from modelrail.domain.models import Definition
    from modelrail.settings.process import Settings
    from tests.conftest import settings_env

    broken = PIPELINE.replace("num_leaves = 15", "num_leafs = 15")
    contract = f"{REPO}/schemas/datasets/"
    (tmp_path / "pipeline.toml").write_text(broken.replace("schemas/datasets/", contract))
    container = bootstrap(Settings.from_env(settings_env(tmp_path / "home")))

    with pytest.raises(ConfigError, match=re.escape("'num_leafs' is not a LightGBM parameter")):
        container.models.add(Definition.from_files(tmp_path / "pipeline.toml"))

    assert container.models.names() == []
