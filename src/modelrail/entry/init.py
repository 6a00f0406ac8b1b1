"""``modelrail init``: a dataset contract and a pipeline configuration inferred from a CSV.

One read of the file (up to ``SAMPLE_ROWS`` rows, saying so when it stops early)
decides, per column, its type, its role and its limits. Each decision names the rule
that made it, says why in a sentence, and keeps the numbers the rule looked at (its
evidence, printed by ``init --explain``). The rules, in order (``docs/contracts.md``
explains them):

- the target is the column the user names; its values choose the objective (two
  values: binary; a few labels or integer codes: multiclass; other numbers:
  regression). A regression target gets no range: its values moving is what
  retraining follows, so new data is never refused for them;
- a column with no value, or one value, is ignored: it carries no information;
- numbers stay numbers unless there is evidence of codes or of an identifier:
  distinct whole numbers on every row, evenly spaced (row numbers, counters) or in a
  column named like ``id``, are an identifier, ignored; whole numbers named like codes
  (``zip_code``, ``store_id``, ``type``, ``occupation``), or at most ``CODE_LIMIT`` of
  them that repeat with a gap ``CODE_GAP`` times the median one (1, 2, 3, 99), are
  category codes; other numbers (a count, a scale, a growing measurement) are integer
  or number columns with the observed range widened by ``RANGE_MARGIN`` of its span on
  each side (never below 0 if no value was);
- whole numbers written with leading zeros (``02134``) are codes kept as text;
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
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modelrail.domain.config import METRICS, Objective
from modelrail.domain.dataset.contract import RANGE_MARGIN, canonical_code, widened_range
from modelrail.domain.models import check_name
from modelrail.kernel.errors import ConfigError

SAMPLE_ROWS = 1_000_000
# What commonly means "missing" in exported CSVs (spreadsheets, R, pandas, SQL dumps).
NULL_TOKENS = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?")
MAX_CATEGORIES = 50
# Whole numbers judged codes by their values alone: at most this many distinct ones,
CODE_LIMIT = 12
# with a gap between neighbouring values at least this many times the median gap
# (1, 2, 3, 99; 1, 33, 44, 81), each value on this many rows on average (codes repeat;
# a count with an outlier in a small table looks the same, and stays a count).
CODE_GAP = 5
CODE_MIN_ROWS = 5
# A different whole number on every row of more rows than this can be an identifier.
IDENTIFIER_ROWS = 20
MAX_CLASSES = 100
_BOOLEAN_TOKENS = frozenset({"true", "false", "yes", "no"})
_ID_NAME = re.compile(r"(^|[_\W])(id|key|uuid|index)$", re.IGNORECASE)
# The last word of a name that says its whole numbers are codes, not quantities: the
# last word, as English puts the noun last (zip_code, store_id, customerType; not
# class_size).
CODE_WORDS = frozenset(
    {
        "code", "id", "key", "type", "class", "kind", "category", "group", "cluster",
        "segment", "zip", "zipcode", "postcode", "fips", "region", "district", "country",
        "status", "sex", "gender", "race", "ethnicity", "religion", "occupation", "job",
    }
)  # fmt: skip
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_LEADING_ZERO = re.compile(r"^[+-]?0[0-9]")
_MODEL_NAME = re.compile(r"[^a-z0-9]+")


@dataclasses.dataclass(frozen=True)
class Decision:
    """One column: its contract entry, the rule that decided it (``docs/contracts.md``
    lists them), why in a sentence, and the evidence: the numbers and facts the rule
    looked at, in the order it looked (``summary(..., explain=True)`` prints them)."""

    entry: dict[str, Any]
    why: str
    rule: str
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)


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
    # A name given is used as given, and must be one; a file's name is made into one.
    model_name = check_name(name) if name else _model_name(path.stem)
    text = {column: frame[column].str.strip() for column in frame.columns}
    missing = {column: values.isin(NULL_TOKENS) for column, values in text.items()}

    missing_targets = int(missing[target].sum())
    chosen, target_decision, classes = _target(
        target, text[target][~missing[target]], objective, missing_targets
    )
    decisions = [target_decision]
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
    """A model name (``domain.models.MODEL_NAME``) made from a file's name: lowercase
    letters, digits and hyphens, starting with a letter, at most 30 characters."""
    ascii_text = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    name = _MODEL_NAME.sub("-", ascii_text.lower()).strip("-")
    if name and not name[0].isalpha():
        name = f"data-{name}"
    name = name[:30].rstrip("-")
    if not name:
        raise ConfigError(f"cannot make a model name from {stem!r}: pass --name")
    return check_name(name)


def _target(
    column: str, values: pd.Series, objective: str, missing: int
) -> tuple[Objective, Decision, pd.Series]:
    """The objective, the target's decision, and the class frequencies."""
    if values.empty:
        raise ConfigError(f"the target {column!r} has no values")
    numbers = pd.to_numeric(values, errors="coerce")
    numeric = bool(np.isfinite(numbers.to_numpy(dtype=np.float64)).all())
    integral = numeric and bool((numbers == np.round(numbers)).all())
    labels = numbers.value_counts() if numeric else values.value_counts()
    if numeric:  # spelled once per distinct value, not once per row
        labels.index = [canonical_code(float(v)) for v in labels.index]
    distinct = len(labels)
    evidence: dict[str, Any] = {
        "rows": len(values) + missing,
        "missing": missing,
        "distinct": distinct,
        "numbers": numeric,
        "whole numbers": integral,
        "objective": "asked" if objective != "auto" else "auto",
    }
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
        entry.update(type="integer" if integral else "number")
        evidence["observed"] = f"{numbers.min():g} to {numbers.max():g}"
        why = (
            f"target: numbers, {distinct} distinct values; no range (observed "
            f"{evidence['observed']}): new data is not refused for a target that moved, "
            "retraining follows it"
        )
        return "regression", Decision(entry, why, "target-regression", evidence), labels
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
    why = f"target: {distinct} classes ({shares}{more})"
    return chosen, Decision(entry, why, f"target-{chosen}", evidence), labels


def _column(column: str, text: pd.Series, missing: pd.Series) -> Decision:
    values = text[~missing]
    entry: dict[str, Any] = {"name": column}
    evidence: dict[str, Any] = {"rows": len(text), "missing": int(missing.sum())}
    if values.empty:
        return _ignored(entry, "text", "no-values", "every value is missing", evidence)
    nullable = bool(missing.any())
    numbers = pd.to_numeric(values, errors="coerce")
    finite = np.isfinite(numbers.to_numpy(dtype=np.float64))
    if finite.all():
        padded = values[values.str.match(_LEADING_ZERO)]
        if padded.empty:
            return _numeric(column, entry, values, numbers, nullable, evidence)
        evidence["leading zeros"] = f"{len(padded)} values, e.g. {padded.iloc[0]!r}"
    distinct = values.nunique()
    lowered = values.str.lower()
    if lowered.isin(_BOOLEAN_TOKENS).all() and lowered.nunique() == 2:
        entry.update(type="boolean", nullable=nullable)
        return Decision(entry, "true/false values", "boolean", evidence)
    if not finite.any():
        stamps = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
        if stamps.notna().all():
            entry.update(type="datetime", role="ignore", nullable=True)
            evidence["dates"] = f"{stamps.min():%Y-%m-%d} to {stamps.max():%Y-%m-%d}"
            return Decision(
                entry,
                f"dates from {evidence['dates']}: checked, not a feature (derive numeric "
                "columns such as month from it to use it)",
                "date",
                evidence,
            )
    evidence.update(distinct=distinct, unique=distinct == len(values))
    if distinct == 1:
        why = f"one value ({values.iloc[0]!r}): no information"
        return _ignored(entry, "text", "one-value", why, evidence)
    if distinct == len(values) and len(values) > IDENTIFIER_ROWS:
        why = "a different value on every row: a name or identifier"
        return _ignored(entry, "text", "text-unique", why, evidence)
    if distinct > MAX_CATEGORIES:
        why = f"{distinct} distinct values: a name, identifier or free text"
        return _ignored(entry, "text", "text-many-values", why, evidence)
    categories = sorted(values.unique())
    entry.update(type="category", nullable=nullable, categories=categories)
    if "leading zeros" in evidence:
        why = (
            f"{distinct} distinct values written with leading zeros "
            f"({evidence['leading zeros']}): codes, kept as text"
        )
        return Decision(entry, why, "code-leading-zeros", evidence)
    mixed = " (some look like numbers: the column is text)" if finite.any() else ""
    return Decision(entry, f"{distinct} distinct values{mixed}", "text-category", evidence)


def _numeric(
    column: str,
    entry: dict[str, Any],
    values: pd.Series,
    numbers: pd.Series,
    nullable: bool,
    evidence: dict[str, Any],
) -> Decision:
    """A column of numbers: ignored if constant or an identifier, category codes on
    evidence of codes, otherwise an integer or number column with a range."""
    integral = bool((numbers == np.round(numbers)).all())
    distinct = int(numbers.nunique())
    evidence.update(distinct=distinct, **{"whole numbers": integral})
    if distinct == 1:
        why = f"one value ({values.iloc[0]}): no information"
        return _ignored(entry, "number", "one-value", why, evidence)
    levels = np.sort(numbers.unique().astype(np.float64))
    gaps = np.diff(levels)
    smallest, largest, usual = float(gaps.min()), float(gaps.max()), float(np.median(gaps))
    unique = distinct == len(numbers)
    order = (
        "increasing"
        if numbers.is_monotonic_increasing
        else "decreasing"
        if numbers.is_monotonic_decreasing
        else "unordered"
    )
    word = _code_word(column)
    evidence.update(
        unique=unique,
        order=order,
        steps=f"constant {smallest:g}" if smallest == largest else f"{smallest:g} to {largest:g}",
        name=f"ends in {word!r}" if word else "no code word",
    )
    if integral and unique and len(numbers) > IDENTIFIER_ROWS:
        if smallest == largest:
            why = (
                f"a different whole number on every row, evenly spaced (step {smallest:g}, "
                f"{order}): a row number or counter, an identifier"
            )
            return _ignored(entry, "integer", "identifier-evenly-spaced", why, evidence)
        if _ID_NAME.search(column) or word:
            why = "a different whole number on every row, named as an identifier or code"
            return _ignored(entry, "integer", "identifier-name", why, evidence)
    if integral and word and distinct <= MAX_CATEGORIES:
        why = (
            f"{distinct} whole-number values, named as codes (ends in {word!r}): category "
            'codes (2, 2.0 and "2" are one); make it an integer column if their order matters'
        )
        return _codes(entry, numbers, nullable, "code-name", why, evidence)
    kind = "integer" if integral else "number"
    evidence["observed"] = f"{numbers.min():g} to {numbers.max():g}"
    evidence["never negative"] = bool(numbers.min() >= 0)
    rule, why = "quantity", f"{kind}s, {distinct} distinct values"
    if integral and distinct <= CODE_LIMIT:
        per_value = len(numbers) / distinct
        evidence.update(
            {
                "none missing between": smallest == largest == 1,
                "largest gap": largest,
                "median gap": usual,
                "rows per value": round(per_value, 1),
            }
        )
        if largest >= CODE_GAP * usual and per_value >= CODE_MIN_ROWS:
            why = (
                f"{distinct} whole-number values with a gap of {largest:g} where the median "
                f'gap is {usual:g}: not a scale, category codes (2, 2.0 and "2" are one); '
                "make it an integer column if their order matters"
            )
            return _codes(entry, numbers, nullable, "code-gaps", why, evidence)
        rule = "count-or-scale"
        spread = (
            "none missing between"
            if smallest == largest == 1
            else f"largest gap {largest:g}, median {usual:g}"
            if largest < CODE_GAP * usual
            else f"{per_value:.1f} rows per value: too few for codes"
        )
        why = (
            f"{distinct} whole-number values {levels[0]:g} to {levels[-1]:g} ({spread}): a "
            "count or a scale, not codes; make it a category if they are codes"
        )
    elif integral and unique and len(numbers) > IDENTIFIER_ROWS and order != "unordered":
        rule = "measurement-uneven"
        why = (
            f"a different whole number on every row, {order}, unevenly spaced (steps "
            f"{smallest:g} to {largest:g}): a measurement, not an identifier"
        )
    elif integral and word:
        why = (
            f"integers, {distinct} distinct values: named as codes (ends in {word!r}) but "
            f"more than {MAX_CATEGORIES}, too many categories; kept as numbers"
        )
    entry.update(type=kind, nullable=nullable, **_range(numbers, integral))
    return Decision(entry, why, rule, evidence)


def _codes(
    entry: dict[str, Any],
    numbers: pd.Series,
    nullable: bool,
    rule: str,
    why: str,
    evidence: dict[str, Any],
) -> Decision:
    codes = _sorted_labels([canonical_code(float(v)) for v in numbers.unique()], True)
    entry.update(type="category", nullable=nullable, categories=codes)
    return Decision(entry, why, rule, evidence)


def _code_word(column: str) -> str | None:
    """The code word ``column`` ends in (``CODE_WORDS``), if any."""
    words = _WORDS.findall(column)
    return words[-1].lower() if words and words[-1].lower() in CODE_WORDS else None


def _ignored(
    entry: dict[str, Any], kind: str, rule: str, why: str, evidence: dict[str, Any]
) -> Decision:
    # An ignored column may have gaps: it never reaches the model.
    entry.update(type=kind, role="ignore", nullable=True)
    return Decision(entry, why, rule, evidence)


def _range(numbers: pd.Series, integral: bool) -> dict[str, float]:
    """The observed range, widened (``widened_range``)."""
    return widened_range(float(numbers.min()), float(numbers.max()), integral)


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


def summary(inference: Inference, *, explain: bool = False) -> str:
    """What ``init`` decided, per column, and why; then what to check. ``explain``: per
    column also the rule that decided, the evidence it looked at, and each limit with
    where it came from; then how the file-wide settings were chosen."""
    rows = f"{inference.rows:,} rows" + (" (sampled)" if inference.sampled else "")
    lines = [f"{inference.name}: {inference.objective}, {rows}", ""]
    width = max(len(d.entry["name"]) for d in inference.decisions)
    target = inference.contract["target"]
    for decision in inference.decisions:
        entry = decision.entry
        name = entry["name"]
        role = "target" if name == target else entry.get("role", "feature")
        if explain:
            lines += _explained(decision, role)
            continue
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
    if explain:
        contract = inference.contract
        [target_decision] = [d for d in inference.decisions if d.entry["name"] == target]
        kept = inference.rows - int(target_decision.evidence["missing"])
        lines += [
            f"min_rows: {contract['min_rows']} (a quarter of the {kept:,} rows with a "
            "target, at least 10, at most 1,000)",
            f"max_missing_target_fraction: {contract['max_missing_target_fraction']} (twice "
            "the share without a target seen, at least 0.05, at most 0.5; 0 if none)",
        ]
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
        + (
            " (by the rows with a target: under 2,000 small trees, under 100,000 larger, "
            "above that larger still with a faster learning rate)"
            if explain
            else ""
        )
    )
    if inference.notes:
        lines += ["", "You may want to change:"]
        lines += [f"  - {note}" for note in inference.notes]
    return "\n".join(lines)


def _explained(decision: Decision, role: str) -> list[str]:
    """One column for ``summary(..., explain=True)``: what was decided, by which rule
    and why, and the evidence."""
    entry, evidence = decision.entry, decision.evidence
    decided = [entry["type"], role]
    missing = evidence.get("missing", 0)
    if role == "ignore":
        decided.append("nullable (never given to the model)")
    elif role == "target":
        decided.append(f"nullable ({missing} rows without a target are dropped and counted)")
    elif entry.get("nullable"):
        decided.append(f"nullable ({missing} of {evidence['rows']:,} missing)")
    else:
        decided.append("not nullable (no value missing)")
    if "min" in entry:
        decided.append(
            f"range [{entry['min']:g}, {entry['max']:g}] (observed {evidence['observed']}, "
            f"widened by {RANGE_MARGIN:.0%} of the span on each side"
            + (", not below 0: never negative)" if evidence["never negative"] else ")")
        )
    elif role == "target" and "observed" in evidence:
        decided.append(f"no range (observed {evidence['observed']})")
    if entry.get("categories"):
        decided.append("categories {" + ", ".join(entry["categories"]) + "}")
    facts = ", ".join(f"{key} {_fact(value)}" for key, value in evidence.items())
    return [
        f"  {entry['name']}",
        f"    decided   {', '.join(decided)}",
        f"    rule      {decision.rule}: {decision.why}",
        f"    evidence  {facts}",
    ]


def _fact(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
