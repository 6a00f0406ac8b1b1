"""The dataset contract: columns, types, roles, ranges, categories, target, size.

A contract file is JSON, checked against ``modelrail/schemas/config/dataset-contract.schema.json``
(which documents every field; ``docs/contracts.md`` explains them with examples) and
then against the rules a schema cannot say (the target is a column, a category column
lists its categories, a range is not upside down).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import orjson

from modelrail.kernel import resources
from modelrail.kernel.errors import ConfigError

ColumnType = Literal["number", "integer", "category", "boolean", "datetime", "text"]
Role = Literal["feature", "ignore"]
NUMERIC_TYPES = ("number", "integer")
# Checked in a file, never given to a model.
NEVER_FEATURES = ("datetime", "text")
# A boolean cell's spellings, compared with its spaces trimmed and in lower case: what
# validation reads in a CSV, and what /predict reads in a string.
TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")
# A range written from observed values (``modelrail init``, ``contract accept``) is
# widened by this share of its span on each side.
RANGE_MARGIN = 0.1


def widened_range(low: float, high: float, integral: bool) -> dict[str, float]:
    """The range ``low`` to ``high`` widened by RANGE_MARGIN of its span on each side,
    so that next month's data is not refused for a value just past this month's; a
    column that never went below zero keeps a floor of zero (no negative ages)."""
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


def canonical_code(value: float) -> str:
    """The one spelling of a number used as a category code: integral values without a
    fraction (``2``), others in their shortest round-trip form (``2.5``). So ``2``,
    ``2.0`` and ``"2"`` are the same category, in a CSV and at ``/predict``."""
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def parse_code(text: str) -> str | None:
    """``text`` as a canonical category code, or None if it is not a finite number."""
    try:
        value = float(text)
    except ValueError:
        return None
    return canonical_code(value) if math.isfinite(value) else None


def are_codes(categories: tuple[str, ...]) -> bool:
    """Whether every category is a number in its canonical spelling: such categories
    are compared as numbers (see ``canonical_code``)."""
    return bool(categories) and all(parse_code(category) == category for category in categories)


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] = ()
    role: Role = "feature"

    @property
    def numeric_codes(self) -> bool:
        return self.type == "category" and are_codes(self.categories)


@dataclasses.dataclass(frozen=True)
class DatasetContract:
    name: str
    target: str
    min_rows: int
    columns: tuple[Column, ...]
    null_tokens: tuple[str, ...] = ("",)
    max_missing_target_fraction: float = 0.0
    sha256: str = ""
    version: int = 1

    @property
    def target_column(self) -> Column:
        return self.column(self.target)

    @property
    def features(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.role == "feature" and c.name != self.target)

    @property
    def passthrough(self) -> tuple[str, ...]:
        """Columns of the file the model does not take: the target and ignored ones."""
        return tuple(c.name for c in self.columns if c.role != "feature" or c.name == self.target)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    @classmethod
    def load(cls, path: Path) -> DatasetContract:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read dataset contract {path}: {exc}") from exc
        return cls.parse(raw, str(path))

    @classmethod
    def parse(cls, raw: bytes, where: str) -> DatasetContract:
        """The contract in ``raw`` (``where`` names it in errors)."""
        try:
            spec = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"dataset contract {where} is not valid JSON: {exc}") from exc
        return cls.from_spec(spec, where, hashlib.sha256(raw).hexdigest())

    @classmethod
    def from_spec(cls, spec: Any, where: str, sha256: str = "") -> DatasetContract:
        """A contract from its parsed JSON; ``ConfigError`` naming every problem."""
        problems = resources.schema_problems("dataset-contract", spec)
        if problems:
            raise ConfigError(f"invalid dataset contract {where}: " + "; ".join(problems))
        columns = tuple(
            Column(
                name=c["name"].strip(),
                type=c["type"],
                nullable=c.get("nullable", False),
                min=c.get("min"),
                max=c.get("max"),
                categories=tuple(c.get("categories", ())),
                role=c.get("role", "feature"),
            )
            for c in spec["columns"]
        )
        contract = cls(
            name=spec["name"],
            target=spec["target"].strip(),
            min_rows=spec.get("min_rows", 1),
            columns=columns,
            null_tokens=tuple(spec.get("null_tokens", ("",))),
            max_missing_target_fraction=spec.get("max_missing_target_fraction", 0.0),
            sha256=sha256,
            version=spec.get("version", 1),
        )
        problems = contract._rule_problems()
        if problems:
            raise ConfigError(f"invalid dataset contract {where}: " + "; ".join(problems))
        return contract

    def _rule_problems(self) -> list[str]:
        names = [c.name for c in self.columns]
        problems = [
            f"column {name!r} is listed twice" for name in dict.fromkeys(names)
            if names.count(name) > 1
        ]  # fmt: skip
        if self.target not in names:
            problems.append(f"target {self.target!r} is not a column; columns are {names}")
        for c in self.columns:
            if c.type == "category" and not c.categories:
                problems.append(f"category column {c.name!r} must list its 'categories'")
            if c.categories and c.type != "category":
                problems.append(f"column {c.name!r}: 'categories' is only for category columns")
            if (c.min is not None or c.max is not None) and c.type not in NUMERIC_TYPES:
                problems.append(
                    f"column {c.name!r}: 'min'/'max' are only for number and integer columns"
                )
            if c.min is not None and c.max is not None and c.min > c.max:
                problems.append(f"column {c.name!r}: min {c.min} is above max {c.max}")
            if c.type in NEVER_FEATURES and c.role == "feature" and c.name != self.target:
                problems.append(
                    f"column {c.name!r}: a {c.type} column cannot be a feature; set "
                    '"role": "ignore" (or derive numeric columns, e.g. month, from it)'
                    if c.type == "datetime"
                    else f"column {c.name!r}: a text column cannot be a feature; set "
                    '"role": "ignore", or make it a category with its categories'
                )
            if c.numeric_codes and len({parse_code(v) for v in c.categories}) < len(c.categories):
                problems.append(f"column {c.name!r}: categories repeat the same number")
        if self.target in names and self.target_column.type in NEVER_FEATURES:
            problems.append(
                f"the target {self.target!r} cannot be a {self.target_column.type} column"
            )
        if not self.features:
            problems.append("the contract has no feature columns (every column is ignored)")
        return problems
