"""The feature schema: how contract columns become LightGBM's numeric matrix.

Training and serving share this one encoding, so they cannot skew: categories map to
their index in the contract's category list (LightGBM native categoricals), booleans to
0/1, numbers to float, and missing values to NaN. The schema is stored in every
version's manifest; the serving path uses it with numpy only (no pandas).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelrail.domain.dataset.contract import Column, DatasetContract, are_codes


@dataclasses.dataclass(frozen=True)
class Feature:
    name: str
    type: str  # number | integer | category | boolean
    nullable: bool
    categories: tuple[str, ...] = ()
    min: float | None = None  # the contract's range: values outside it get a warning
    max: float | None = None

    @property
    def is_categorical(self) -> bool:
        return self.type == "category"

    @property
    def numeric_codes(self) -> bool:
        """Categories that are numbers: ``2``, ``2.0`` and ``"2"`` are the same one."""
        return self.is_categorical and are_codes(self.categories)

    def code_of(self) -> dict[str, int]:
        return {category: index for index, category in enumerate(self.categories)}


@dataclasses.dataclass(frozen=True)
class FeatureSchema:
    objective: str
    features: tuple[Feature, ...]
    target: str
    classes: tuple[str, ...]  # class labels in model output order; empty for regression
    # The contract's other columns (the target, ignored ones): a request may carry them,
    # as a row of the training file does; they are reported as ignored, not refused.
    passthrough: tuple[str, ...] = ()
    # The cells the contract reads as missing ("NA", "?"...): a row copied from the CSV
    # may hold them. Versions registered before they were kept know only the blank one.
    null_tokens: tuple[str, ...] = ("",)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical_names(self) -> list[str]:
        return [f.name for f in self.features if f.is_categorical]

    @classmethod
    def from_contract(cls, contract: DatasetContract, objective: str) -> FeatureSchema:
        target = contract.target_column
        classes: tuple[str, ...] = ()
        if objective != "regression":
            classes = target.categories if target.type == "category" else ("false", "true")
        return cls(
            objective=objective,
            features=tuple(_feature(c) for c in contract.features),
            target=target.name,
            classes=classes,
            passthrough=contract.passthrough,
            null_tokens=contract.null_tokens,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> FeatureSchema:
        return cls(
            objective=spec["objective"],
            features=tuple(
                Feature(
                    name=f["name"],
                    type=f["type"],
                    nullable=f["nullable"],
                    categories=tuple(f["categories"]),
                    min=f.get("min"),
                    max=f.get("max"),
                )
                for f in spec["features"]
            ),
            target=spec["target"],
            classes=tuple(spec["classes"]),
            passthrough=tuple(spec.get("passthrough", ())),
            null_tokens=tuple(spec.get("null_tokens", ("",))),
        )

    def encode_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Row-wise encoding of already-validated records (the serving path)."""
        matrix = np.full((len(records), len(self.features)), np.nan, dtype=np.float64)
        codes = [f.code_of() if f.is_categorical else None for f in self.features]
        for row_index, record in enumerate(records):
            row = matrix[row_index]
            for col_index, feature in enumerate(self.features):
                value = record.get(feature.name)
                if value is None:
                    continue
                code_map = codes[col_index]
                if code_map is not None:
                    code = code_map.get(value)
                    row[col_index] = math.nan if code is None else code
                else:
                    row[col_index] = float(value)
        return matrix

    def encode_columns(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Column-wise encoding of a parsed dataset (the training path). Columns read
        from a snapshot keep their Arrow table (``table.TableColumns``): a category's
        codes then come from Arrow, never through Python strings."""
        matrix = np.empty((_length(columns), len(self.features)), dtype=np.float64)
        arrow = getattr(columns, "table", None)
        for col_index, feature in enumerate(self.features):
            if not feature.is_categorical:
                matrix[:, col_index] = columns[feature.name]
            elif arrow is not None:
                matrix[:, col_index] = _arrow_codes(arrow.column(feature.name), feature.categories)
            else:
                matrix[:, col_index] = _codes(columns[feature.name], feature.categories)
        return matrix

    def encode_target(self, values: np.ndarray) -> np.ndarray:
        """Class indexes (classification) or floats (regression)."""
        if self.objective == "regression":
            return np.asarray(values, dtype=np.float64)
        if values.dtype != object:  # a boolean target parsed to 0.0/1.0
            return np.asarray(values, dtype=np.float64)
        return _codes(values, self.classes)


def _codes(values: np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """Each value's index in ``categories`` (NaN if missing or unknown). The training
    path encodes millions of rows: one dictionary lookup per value (the snapshot's
    rows share one string object per distinct value) measured six times faster than
    ``pandas.Categorical``, which first converts the strings to Arrow's."""
    index = {category: float(code) for code, category in enumerate(categories)}
    return np.fromiter((index.get(v, math.nan) for v in values), np.float64, len(values))


def _arrow_codes(column: Any, categories: Sequence[str]) -> np.ndarray:
    """``_codes`` of an Arrow column (dictionary-encoded or text), by Arrow's
    ``index_in``: a million values in a tenth of a second. Imported here: the serving
    path never loads pyarrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    codes = pc.index_in(column, value_set=pa.array(list(categories), type=pa.string()))
    encoded: np.ndarray = codes.to_numpy(zero_copy_only=False).astype(np.float64)
    return encoded


def _length(columns: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def _feature(column: Column) -> Feature:
    return Feature(
        name=column.name,
        type=column.type,
        nullable=column.nullable,
        categories=column.categories,
        min=column.min,
        max=column.max,
    )
