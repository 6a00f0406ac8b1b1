"""Contract evolution: the change to its contract that a refused upload asks for.

When data legitimately changes (a new category value, prices past the old maximum, a
column added or dropped), validate refuses it as it refuses broken data. What tells
the two apart is a person; what this module does is say exactly what the contract
would have to become for the upload to pass, so that a person can accept it
(``modelrail contract diff RUN_ID``, ``modelrail contract accept RUN_ID``).

While validate reads the upload it notes, in bounded memory (``Observed``), every
value outside a category column's categories (at most ``MAX_NEW_CATEGORIES``
distinct ones per column: more is no category) and the lowest and highest value
outside a numeric column's range. From those and the report's header problems,
``propose`` lists the changes:

- ``categories``: the new values, appended after the old ones (the model's encoding
  of the old ones stays as it was);
- ``range``: the side that broke, widened to cover what was seen the way ``init``
  widens an observed range (``contract.widened_range``);
- ``add_column``: a column the contract does not know, added as ignored text (checked,
  kept, never given to the model: making it a feature is a decision for a person,
  in the contract file);
- ``remove_column``: a column the upload no longer has (never the target).

Every other problem (a value that is not a number, a missing value where none is
allowed, a repeated header name, too few rows…) is broken data, not a change of the
contract: it is listed as ``unaddressed``, and an upload with such a problem still
fails after the change is accepted. A refusal with no contract change has no
proposal. ``apply`` writes the changes into the contract's JSON as a new version.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modelrail.domain.dataset.checks import Problem
from modelrail.domain.dataset.contract import Column, DatasetContract, widened_range
from modelrail.kernel.errors import ConfigError

# A column showing more distinct values outside its categories than this is not
# growing a category: no proposal is made for it.
MAX_NEW_CATEGORIES = 1000
# The changes a proposal is made of, in the order it lists them.
KINDS = ("remove_column", "add_column", "categories", "range")


class Observed:
    """What the refused rows showed of a change of the contract, added up batch by
    batch in bounded memory: per category column its values outside the categories
    with their counts (while at most ``MAX_NEW_CATEGORIES``), per numeric column the
    lowest and highest value outside its range."""

    def __init__(self) -> None:
        self.categories: dict[str, dict[str, int]] = {}
        self.too_many: set[str] = set()
        self.low: dict[str, float] = {}
        self.high: dict[str, float] = {}

    def add(self, column: Column, check: str, values: np.ndarray) -> None:
        """Note ``values`` (the failing cells of one batch, as checked) of ``column``
        failing ``check``."""
        if check == "category":
            self._categories(column.name, values)
        elif check == "range":
            numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
            present = numbers.to_numpy(dtype=np.float64)
            present = present[np.isfinite(present)]
            if present.size and column.min is not None and present.min() < column.min:
                low = float(present.min())
                self.low[column.name] = min(self.low.get(column.name, low), low)
            if present.size and column.max is not None and present.max() > column.max:
                high = float(present.max())
                self.high[column.name] = max(self.high.get(column.name, high), high)

    def _categories(self, name: str, values: np.ndarray) -> None:
        if name in self.too_many:
            return
        seen = self.categories.setdefault(name, {})
        counted = pd.Series(values, dtype=object).value_counts(sort=False)
        for value, count in counted.items():
            seen[str(value)] = seen.get(str(value), 0) + int(count)
        if len(seen) > MAX_NEW_CATEGORIES:
            self.too_many.add(name)
            del self.categories[name]


@dataclasses.dataclass(frozen=True)
class Proposal:
    """The contract change a refused upload asks for: ``changes`` (each a dict with
    ``column``, ``change`` (one of ``KINDS``), its values and a sentence, ``text``)
    and the problems no change of the contract would address."""

    changes: tuple[dict[str, Any], ...]
    unaddressed: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"changes": list(self.changes), "unaddressed": list(self.unaddressed)}


def propose(
    contract: DatasetContract, problems: Sequence[Problem], observed: Observed
) -> Proposal | None:
    """The change of ``contract`` that the refused upload's ``problems`` (and what was
    ``observed`` while reading it) ask for; None when none of them is a contract
    change."""
    changes: list[dict[str, Any]] = []
    unaddressed: list[str] = []
    columns = {column.name: column for column in contract.columns}
    ranged: set[str] = set()
    for problem in problems:
        column = columns.get(problem.column or "")
        change: dict[str, Any] | None = None
        if problem.check == "missing_column" and column is not None:
            change = _removed(column, contract)
        elif problem.check == "unexpected_column" and problem.column is not None:
            change = _added(problem.column)
        elif problem.check == "category" and column is not None:
            change = _categories(column, observed)
        elif problem.check == "range" and column is not None:
            if column.name in ranged:
                continue  # both sides broke: one change widens both
            ranged.add(column.name)
            change = _range(column, observed)
        if change is None:
            unaddressed.append(f"[{problem.check}] {problem.message}")
        else:
            changes.append(change)
    if not changes:
        return None
    changes.sort(key=lambda c: KINDS.index(c["change"]))
    return Proposal(tuple(changes), tuple(unaddressed))


def _removed(column: Column, contract: DatasetContract) -> dict[str, Any] | None:
    if column.name == contract.target:
        return None  # no model without its target
    return {
        "column": column.name,
        "change": "remove_column",
        "text": f"remove column {column.name!r} ({column.type}, {column.role}): "
        "the upload no longer has it",
    }


def _added(name: str) -> dict[str, Any]:
    return {
        "column": name,
        "change": "add_column",
        "type": "text",
        "role": "ignore",
        "nullable": True,
        "text": f"add column {name!r} as ignored text (checked and kept, never given to "
        "the model; make it a feature in the contract file if it should be one)",
    }


def _categories(column: Column, observed: Observed) -> dict[str, Any] | None:
    if column.name in observed.too_many or column.name not in observed.categories:
        return None
    found = observed.categories[column.name]
    new = sorted(found)
    rows = sum(found.values())
    shown = ", ".join(repr(value) for value in new)
    return {
        "column": column.name,
        "change": "categories",
        "add": new,
        "rows": rows,
        "text": f"column {column.name!r}: add categor{'y' if len(new) == 1 else 'ies'} "
        f"{shown} ({rows} row(s)) to {list(column.categories)}",
    }


def _range(column: Column, observed: Observed) -> dict[str, Any] | None:
    low, high = observed.low.get(column.name), observed.high.get(column.name)
    if low is None and high is None:
        return None
    bounds = [b for b in (column.min, column.max, low, high) if b is not None]
    widened = widened_range(min(bounds), max(bounds), column.type == "integer")
    change: dict[str, Any] = {"column": column.name, "change": "range"}
    said = []
    if low is not None:
        change["min"] = widened["min"]
        said.append(f"min {_number(column.min)} → {_number(widened['min'])} (lowest seen {low:g})")
    if high is not None:
        change["max"] = widened["max"]
        said.append(
            f"max {_number(column.max)} → {_number(widened['max'])} (highest seen {high:g})"
        )
    change["observed"] = {"min": low, "max": high}
    change["text"] = f"column {column.name!r}: " + ", ".join(said)
    return change


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def apply(
    spec: Mapping[str, Any], changes: Iterable[Mapping[str, Any]], version: int
) -> dict[str, Any]:
    """The contract JSON ``spec`` with ``changes`` written into it, as ``version``."""
    columns = [dict(column) for column in spec["columns"]]
    for change in changes:
        name, kind = change["column"], change["change"]
        found = [c for c in columns if str(c["name"]).strip() == name]
        if kind == "add_column":
            if not found:
                columns.append(
                    {k: change[k] for k in ("type", "role", "nullable")} | {"name": name}
                )
            continue
        if not found:
            raise ConfigError(f"the contract has no column {name!r} to change")
        column = found[0]
        if kind == "remove_column":
            columns.remove(column)
        elif kind == "categories":
            known = list(column.get("categories", []))
            column["categories"] = known + [v for v in change["add"] if v not in known]
        elif kind == "range":
            column.update({side: change[side] for side in ("min", "max") if side in change})
    return {**spec, "version": version, "columns": columns}
