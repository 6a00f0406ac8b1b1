"""``modelrail init``: a dataset contract and a pipeline configuration inferred from a CSV.

One read of the file (up to ``SAMPLE_ROWS`` rows, saying so when it stops early)
decides, per column, its type, its role and its limits, each with the reason a person
can check. The rules, in order (``docs/contracts.md`` explains them):

- the target is the column the user names; its values choose the objective (two
  values: binary; a few labels or integer codes: multiclass; other numbers: regression);
- a column with no value, or one value, is ignored: it carries no information;
- numbers: a few distinct integers (at most ``CODE_LIMIT``) are category codes;
  distinct integers on every row that only grow (or a name like ``id``) are an
  identifier, ignored; others are integer or number columns with the observed range
  widened by ``RANGE_MARGIN`` of its span on each side (never below 0 if no value was);
- true/false, yes/no: boolean;
- ISO 8601 dates and times: datetime, ignored (a date says when a row was recorded;
  a model that learns it does not generalise to next month's rows);
- other text: a category if it has at most ``MAX_CATEGORIES`` distinct values and
  repeats; otherwise a name, an identifier or free text, ignored.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modelrail.domain.config import METRICS, Objective
from modelrail.domain.dataset.contract import canonical_code
from modelrail.kernel.errors import ConfigError

SAMPLE_ROWS = 1_000_000
# What commonly means "missing" in exported CSVs (spreadsheets, R, pandas, SQL dumps).
NULL_TOKENS = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?")
MAX_CATEGORIES = 50
CODE_LIMIT = 12
MAX_CLASSES = 100
RANGE_MARGIN = 0.1
_BOOLEAN_TOKENS = frozenset({"true", "false", "yes", "no"})
_ID_NAME = re.compile(r"(^|[_\W])(id|key|uuid|index)$", re.IGNORECASE)
_MODEL_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclasses.dataclass(frozen=True)
class Decision:
    """One column: its contract entry and why."""

    entry: dict[str, Any]
    why: str


@dataclasses.dataclass(frozen=True)
class Inference:
    name: str
    objective: Objective
    rows: int
    sampled: bool
    contract: dict[str, Any]
    decisions: tuple[Decision, ...]
    training: dict[str, Any]
    gate: list[dict[str, Any]]
    notes: tuple[str, ...]


def infer(
    path: Path, target: str, *, name: str | None = None, objective: str = "auto"
) -> Inference:
    """The contract and configuration ``path`` suggests; ``ConfigError`` if it cannot
    be the training data for ``target`` (with what would fix it)."""
    frame, sampled = _read(path)
    if target not in frame.columns:
        raise ConfigError(
            f"--target {target!r} is not a column of {path}; columns: {list(frame.columns)}"
        )
    model_name = _model_name(name or path.stem)
    text = {column: frame[column].str.strip() for column in frame.columns}
    missing = {column: values.isin(NULL_TOKENS) for column, values in text.items()}

    chosen, target_entry, target_why, classes = _target(
        target, text[target][~missing[target]], objective
    )
    missing_targets = int(missing[target].sum())
    decisions = [Decision(target_entry, target_why)]
    for column in frame.columns:
        if column != target:
            decisions.append(_column(column, text[column], missing[column]))
    rows = len(frame)
    kept = rows - missing_targets
    if not any(d.entry.get("role", "feature") == "feature" for d in decisions[1:]):
        raise ConfigError(
            "no column can be a feature: every column but the target is ignored "
            "(see the reasons above); a model needs at least one"
        )
    order = {column: position for position, column in enumerate(frame.columns)}
    decisions.sort(key=lambda d: order[d.entry["name"]])

    contract: dict[str, Any] = {
        "name": model_name,
        "description": f"Inferred by modelrail init from {path.name} ({rows} rows).",
        "target": target,
        "min_rows": max(10, min(1000, kept // 4)),
        "max_missing_target_fraction": _missing_target_limit(missing_targets, rows),
        "null_tokens": list(NULL_TOKENS),
        "columns": [d.entry for d in decisions],
    }
    notes = _notes(decisions, target, missing_targets, rows, sampled)
    return Inference(
        name=model_name,
        objective=chosen,
        rows=rows,
        sampled=sampled,
        contract=contract,
        decisions=tuple(decisions),
        training=_training(kept),
        gate=_gate(chosen, classes),
        notes=notes,
    )


def _read(path: Path) -> tuple[pd.DataFrame, bool]:
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skipinitialspace=True,
            nrows=SAMPLE_ROWS + 1,
        )
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ConfigError(f"cannot read {path} as a CSV: {exc}") from exc
    with path.open(newline="", encoding="utf-8-sig") as file:
        header = [name.strip() for name in next(csv.reader(file), [])]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:  # pandas would rename them quietly ("a", "a.1")
        raise ConfigError(f"{path} repeats column names {repeated}: rename them")
    frame.columns = header
    if frame.empty:
        raise ConfigError(f"{path} has a header but no data rows")
    sampled = len(frame) > SAMPLE_ROWS
    return (frame.iloc[:SAMPLE_ROWS] if sampled else frame), sampled


def _model_name(stem: str) -> str:
    name = _MODEL_NAME.sub("-", stem).strip("-._")[:63]
    if not name:
        raise ConfigError(f"cannot make a model name from {stem!r}: pass --name")
    return name


def _target(
    column: str, values: pd.Series, objective: str
) -> tuple[Objective, dict[str, Any], str, pd.Series]:
    """The objective, the target's contract entry, why, and the class frequencies."""
    if values.empty:
        raise ConfigError(f"the target {column!r} has no values")
    numbers = pd.to_numeric(values, errors="coerce")
    numeric = bool(np.isfinite(numbers.to_numpy(dtype=np.float64)).all())
    integral = numeric and bool((numbers == np.round(numbers)).all())
    labels = numbers.value_counts() if numeric else values.value_counts()
    if numeric:  # spelled once per distinct value, not once per row
        labels.index = [canonical_code(float(v)) for v in labels.index]
    distinct = len(labels)
    if objective == "auto":
        if distinct == 2:
            objective = "binary"
        elif numeric and not (integral and distinct <= CODE_LIMIT):
            objective = "regression"
        else:
            objective = "multiclass"
    entry: dict[str, Any] = {"name": column, "nullable": True}
    if objective == "regression":
        if not numeric:
            raise ConfigError(
                f"the target {column!r} holds text (e.g. {values.iloc[0]!r}): regression "
                "needs numbers; use --objective binary|multiclass"
            )
        entry.update(type="integer" if integral else "number", **_range(numbers, integral))
        return "regression", entry, f"target: numbers, {distinct} distinct values", labels
    if objective == "binary" and distinct != 2:
        raise ConfigError(
            f"the target {column!r} has {distinct} distinct values; binary needs exactly 2 "
            "(use --objective multiclass or regression)"
        )
    if objective == "multiclass" and not 3 <= distinct <= MAX_CLASSES:
        raise ConfigError(
            f"the target {column!r} has {distinct} distinct values; multiclass takes 3 to "
            f"{MAX_CLASSES} (use --objective binary or regression)"
        )
    categories = _sorted_labels(labels.index, numeric)
    entry.update(type="category", categories=categories)
    shares = ", ".join(f"{label} {labels[label] / len(values):.0%}" for label in categories[:6])
    more = ", …" if len(categories) > 6 else ""
    chosen: Objective = "binary" if objective == "binary" else "multiclass"
    return chosen, entry, f"target: {distinct} classes ({shares}{more})", labels


def _column(column: str, text: pd.Series, missing: pd.Series) -> Decision:
    values = text[~missing]
    entry: dict[str, Any] = {"name": column}
    if values.empty:
        return _ignored(entry, "text", "every value is missing")
    nullable = bool(missing.any())
    numbers = pd.to_numeric(values, errors="coerce")
    finite = np.isfinite(numbers.to_numpy(dtype=np.float64))
    distinct = values.nunique()
    if finite.all():
        integral = bool((numbers == np.round(numbers)).all())
        distinct = numbers.nunique()
        if distinct == 1:
            return _ignored(entry, "number", f"one value ({values.iloc[0]}): no information")
        if (
            integral
            and distinct == len(values) > 20
            and (numbers.is_monotonic_increasing or _ID_NAME.search(column))
        ):
            return _ignored(
                entry, "integer", "a different whole number on every row: an identifier"
            )
        if integral and distinct <= CODE_LIMIT:
            codes = _sorted_labels([canonical_code(float(v)) for v in numbers.unique()], True)
            entry.update(type="category", nullable=nullable, categories=codes)
            return Decision(
                entry,
                f'{distinct} whole-number values: category codes (2, 2.0 and "2" are one); '
                "make it an integer column if their order matters",
            )
        kind = "integer" if integral else "number"
        entry.update(type=kind, nullable=nullable, **_range(numbers, integral))
        return Decision(entry, f"{kind}s, {distinct} distinct values")
    lowered = values.str.lower()
    if lowered.isin(_BOOLEAN_TOKENS).all() and lowered.nunique() == 2:
        entry.update(type="boolean", nullable=nullable)
        return Decision(entry, "true/false values")
    if not finite.any():
        stamps = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
        if stamps.notna().all():
            entry.update(type="datetime", role="ignore", nullable=True)
            return Decision(
                entry,
                f"dates from {stamps.min():%Y-%m-%d} to {stamps.max():%Y-%m-%d}: checked, not "
                "a feature (derive numeric columns such as month from it to use it)",
            )
    if distinct == 1:
        return _ignored(entry, "text", f"one value ({values.iloc[0]!r}): no information")
    if distinct == len(values) and len(values) > 20:
        return _ignored(entry, "text", "a different value on every row: a name or identifier")
    if distinct > MAX_CATEGORIES:
        return _ignored(
            entry, "text", f"{distinct} distinct values: a name, identifier or free text"
        )
    categories = sorted(values.unique())
    entry.update(type="category", nullable=nullable, categories=categories)
    mixed = " (some look like numbers: the column is text)" if finite.any() else ""
    return Decision(entry, f"{distinct} distinct values{mixed}")


def _ignored(entry: dict[str, Any], kind: str, why: str) -> Decision:
    # An ignored column may have gaps: it never reaches the model.
    entry.update(type=kind, role="ignore", nullable=True)
    return Decision(entry, why)


def _range(numbers: pd.Series, integral: bool) -> dict[str, float]:
    """The observed range widened by RANGE_MARGIN of its span on each side, so that
    next month's data is not refused for a value just past this month's; a column
    that never went below zero keeps a floor of zero (no negative ages)."""
    low, high = float(numbers.min()), float(numbers.max())
    margin = RANGE_MARGIN * (high - low)
    lower = low - margin if low < 0 or low - margin >= 0 else 0.0
    upper = high + margin
    if integral:
        return {"min": math.floor(lower), "max": math.ceil(upper)}
    return {"min": _round(lower, math.floor), "max": _round(upper, math.ceil)}


def _round(value: float, direction: Callable[[float], int]) -> float:
    """``value`` to three significant digits, rounded outward (``direction``)."""
    if value == 0:
        return 0.0
    exponent = math.floor(math.log10(abs(value))) - 2
    return round(direction(value / 10.0**exponent) * 10.0**exponent, max(0, -exponent))


def _sorted_labels(labels: Any, numeric: bool) -> list[str]:
    return sorted(map(str, labels), key=float if numeric else str)


def _missing_target_limit(missing: int, rows: int) -> float:
    """Twice the share seen (at least 5 %, at most 50 %); 0 if no target was missing."""
    if not missing:
        return 0.0
    return min(0.5, max(0.05, math.ceil(200 * missing / rows) / 100))


def _training(rows: int) -> dict[str, Any]:
    """A LightGBM set-up for ``rows`` rows: small data gets small trees and a floor of
    a few rows per leaf; large data larger trees and a faster learning rate."""
    if rows < 2_000:
        leaves, min_leaf, rate, rounds, patience = 15, 5, 0.05, 500, 30
    elif rows < 100_000:
        leaves, min_leaf, rate, rounds, patience = 31, 20, 0.05, 1000, 50
    else:
        leaves, min_leaf, rate, rounds, patience = 63, 100, 0.1, 1000, 50
    return {
        "seed": 42,
        "num_boost_round": rounds,
        "early_stopping_rounds": patience,
        "validation_fraction": 0.15,
        "holdout_fraction": 0.2,
        "params": {
            "learning_rate": rate,
            "num_leaves": leaves,
            "min_data_in_leaf": min_leaf,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.9,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        },
    }


def _gate(objective: Objective, classes: pd.Series) -> list[dict[str, Any]]:
    """Thresholds a useful first model passes and a useless one does not, and change
    limits against the champion for the ones after it."""
    direction = METRICS[objective]
    if objective == "regression":
        gates: list[dict[str, Any]] = [
            {"name": "r2", "min": 0.0},  # better than always answering the mean
            {"name": "rmse", "max_change_rel": 0.1},
        ]
    elif objective == "binary":
        gates = [
            {"name": "auc", "min": 0.6, "max_change_abs": 0.03},  # 0.5 is a coin
            {"name": "binary_logloss", "max_change_rel": 0.25},
        ]
    else:
        majority = float(classes.max() / classes.sum())
        gates = [
            # At least as right as always answering the commonest class.
            {"name": "accuracy", "min": math.floor(majority * 1000) / 1000, "max_change_abs": 0.03},
            {"name": "macro_f1", "max_change_abs": 0.05},
            {"name": "multi_logloss", "max_change_rel": 0.25},
        ]
    return [{"name": g["name"], "direction": direction[g["name"]], **g} for g in gates]


def _notes(
    decisions: list[Decision], target: str, missing_targets: int, rows: int, sampled: bool
) -> tuple[str, ...]:
    notes = []
    if sampled:
        notes.append(
            f"the file has more than {SAMPLE_ROWS:,} rows: types, ranges and categories come "
            f"from the first {SAMPLE_ROWS:,}; check them against the rest"
        )
    if missing_targets:
        notes.append(
            f"{missing_targets} of {rows} rows have no target: validation drops them (and "
            "counts them), up to max_missing_target_fraction"
        )
    ignored = [d.entry["name"] for d in decisions if d.entry.get("role") == "ignore"]
    if ignored:
        notes.append(
            f"ignored columns {ignored} stay in the file and may be sent to /predict; "
            'set "role": "feature" on one the model should use'
        )
    strict = [
        d.entry["name"]
        for d in decisions
        if d.entry.get("role", "feature") == "feature"
        and d.entry["name"] != target
        and d.entry.get("nullable") is False
    ]
    if strict:
        notes.append(
            f"columns {strict} had no missing value, so a file with a gap there is refused; "
            'set "nullable": true where gaps are acceptable'
        )
    if any(d.entry.get("categories") for d in decisions if d.entry["name"] != target):
        notes.append(
            "a category outside a column's list is refused in a file (and answered as "
            "missing, with a warning, at /predict): add categories you expect"
        )
    return tuple(notes)


CONFIG_FILE = "pipeline.toml"


def write(inference: Inference, out: Path, *, force: bool = False) -> tuple[Path, Path]:
    """Write ``out/pipeline.toml`` and its contract; refuse to replace files unless
    ``force``. Both are checked by loading them, as every stage will."""
    import tomlkit

    from modelrail.domain.config import PipelineConfig
    from modelrail.kernel import resources

    config_path = out / CONFIG_FILE
    contract_path = out / f"{inference.name}.contract.json"
    existing = [str(p) for p in (config_path, contract_path) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{', '.join(existing)} already exist: pass --force to replace them")
    out.mkdir(parents=True, exist_ok=True)
    schema = resources.schema_dir("config") / "dataset-contract.schema.json"
    contract = {"$schema": os.path.relpath(schema, out.resolve()), **inference.contract}
    contract_path.write_text(_contract_json(contract))

    doc = tomlkit.document()
    doc.add(
        tomlkit.comment(f"Written by modelrail init for {inference.name} ({inference.rows} rows).")
    )
    doc.add(tomlkit.comment("Every field: docs/contracts.md. Hashed into every run id."))
    model = tomlkit.table()
    model.add("name", inference.name)
    model.add("contract", contract_path.name)
    model.add("objective", inference.objective)
    model["objective"].comment("binary | multiclass | regression")
    doc.add("model", model)
    training = tomlkit.table()
    for key, value in inference.training.items():
        if key != "params":
            training.add(key, value)
    training["holdout_fraction"].comment("the hold-out the gate evaluates on")
    params = tomlkit.table()
    for key, value in inference.training["params"].items():
        params.add(key, value)
    training.add("params", params)
    doc.add("training", training)
    metrics = tomlkit.aot()
    for gate in inference.gate:
        entry = tomlkit.table()
        for key, value in gate.items():
            entry.add(key, value)
        metrics.append(entry)
    gate_table = tomlkit.table()
    gate_table.add(
        tomlkit.comment("min/max judge every candidate; max_change_* compare it with the champion")
    )
    gate_table.add("metrics", metrics)
    doc.add("gate", gate_table)
    config_path.write_text(tomlkit.dumps(doc))
    PipelineConfig.load(config_path)  # what every stage does at start-up
    return config_path, contract_path


def _contract_json(contract: Mapping[str, Any]) -> str:
    """The contract with one column per line: short enough to read, easy to edit."""
    fields = [
        f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}"
        for key, value in contract.items()
        if key != "columns"
    ]
    columns = ",\n".join(
        "    " + json.dumps(column, ensure_ascii=False) for column in contract["columns"]
    )
    return "{\n" + ",\n".join(fields) + f',\n  "columns": [\n{columns}\n  ]\n}}\n'


def summary(inference: Inference) -> str:
    """What ``init`` decided, per column, and why; then what to check."""
    rows = f"{inference.rows:,} rows" + (" (sampled)" if inference.sampled else "")
    lines = [f"{inference.name}: {inference.objective}, {rows}", ""]
    width = max(len(d.entry["name"]) for d in inference.decisions)
    for decision in inference.decisions:
        entry = decision.entry
        name = entry["name"]
        role = "target" if name == inference.contract["target"] else entry.get("role", "feature")
        detail = [entry["type"]]
        if "min" in entry:
            detail.append(f"[{entry['min']:g}, {entry['max']:g}]")
        if entry.get("categories") and role != "ignore":
            shown = entry["categories"][:8]
            detail.append(
                "{" + ", ".join(shown) + (", …" if len(entry["categories"]) > 8 else "") + "}"
            )
        if entry.get("nullable") and role == "feature":
            detail.append("nullable")
        lines.append(f"  {name:<{width}}  {role:<7}  {' '.join(detail)}")
        lines.append(f"  {'':<{width}}           {decision.why}")
    lines.append("")
    gates = ", ".join(
        f"{g['name']} "
        + " ".join(f"{k}={v}" for k, v in g.items() if k not in ("name", "direction"))
        for g in inference.gate
    )
    lines.append(f"gate: {gates}")
    params = inference.training["params"]
    lines.append(
        f"LightGBM: num_leaves={params['num_leaves']}, min_data_in_leaf="
        f"{params['min_data_in_leaf']}, learning_rate={params['learning_rate']}, up to "
        f"{inference.training['num_boost_round']} rounds"
    )
    if inference.notes:
        lines += ["", "You may want to change:"]
        lines += [f"  - {note}" for note in inference.notes]
    return "\n".join(lines)
