"""Metrics match their textbook definitions; the gate explains every verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modelrail.domain.config import MetricGate
from modelrail.domain.evaluation import judge, metrics
from modelrail.kernel.errors import ConfigError


def test_binary_metrics() -> None:
    y = np.array([0, 0, 1, 1], dtype=float)
    p = np.array([0.1, 0.4, 0.35, 0.8])

    result = metrics("binary", y, p)

    assert result["auc"] == pytest.approx(0.75)  # 3 of 4 positive/negative pairs ordered
    assert result["accuracy"] == pytest.approx(0.75)
    expected = -np.mean([math.log(0.9), math.log(0.6), math.log(0.35), math.log(0.8)])
    assert result["binary_logloss"] == pytest.approx(expected)


def test_multiclass_metrics() -> None:
    y = np.array([0, 1, 2, 2], dtype=float)
    p = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])

    result = metrics("multiclass", y, p)

    assert result["accuracy"] == pytest.approx(0.75)
    assert result["multi_logloss"] == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.7, 0.2])))
    # class 0: tp1 fp1 -> 2/3; class 1: 1; class 2: tp1 fn1 -> 2/3
    assert result["macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)


def test_regression_metrics() -> None:
    y = np.array([1.0, 2.0, 3.0])
    p = np.array([1.0, 2.0, 5.0])

    result = metrics("regression", y, p)

    assert result["rmse"] == pytest.approx(math.sqrt(4 / 3))
    assert result["mae"] == pytest.approx(2 / 3)
    assert result["r2"] == pytest.approx(1 - 4 / 2)


GATES = (
    MetricGate("accuracy", "higher", min=0.8, max_change_abs=0.02),
    MetricGate("multi_logloss", "lower", max=0.5, max_change_rel=0.1),
)


def test_the_first_model_is_judged_on_values_alone() -> None:
    verdict = judge(GATES, {"accuracy": 0.85, "multi_logloss": 0.4}, None)

    assert verdict.blessed
    assert {c.kind for c in verdict.checks} == {"min", "max"}


def test_a_value_threshold_rejects() -> None:
    verdict = judge(GATES, {"accuracy": 0.7, "multi_logloss": 0.4}, None)

    assert not verdict.blessed
    assert verdict.to_dict()["reasons"] == ["accuracy=0.7000 fails min 0.8"]


def test_a_change_threshold_rejects_a_candidate_worse_than_the_champion() -> None:
    champion = {"accuracy": 0.95, "multi_logloss": 0.20}

    verdict = judge(GATES, {"accuracy": 0.92, "multi_logloss": 0.21}, champion)

    assert not verdict.blessed
    assert verdict.to_dict()["reasons"] == [
        "accuracy=0.9200 vs champion 0.9500 fails max_change_abs 0.02"
    ]


def test_a_change_threshold_passes_small_regressions_and_improvements() -> None:
    champion = {"accuracy": 0.95, "multi_logloss": 0.20}

    assert judge(GATES, {"accuracy": 0.94, "multi_logloss": 0.215}, champion).blessed
    assert judge(GATES, {"accuracy": 0.99, "multi_logloss": 0.10}, champion).blessed


def test_a_gate_on_a_metric_the_objective_lacks_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="rmse"):
        judge((MetricGate("rmse", "lower", max=1.0),), {"accuracy": 1.0}, None)
