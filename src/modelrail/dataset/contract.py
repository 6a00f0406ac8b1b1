"""The dataset contract: columns, types, nullability, ranges, categories, target, size."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Literal

import orjson

from modelrail.errors import ConfigError

ColumnType = Literal["number", "integer", "category", "boolean"]


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] = ()
    feature: bool = True  # False: checked but not given to the model (ids, years)


@dataclasses.dataclass(frozen=True)
class DatasetContract:
    name: str
    target: str
    min_rows: int
    columns: tuple[Column, ...]
    null_tokens: tuple[str, ...] = ("",)
    sha256: str = ""

    @property
    def target_column(self) -> Column:
        return self.column(self.target)

    @property
    def features(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.feature and c.name != self.target)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    @classmethod
    def load(cls, path: Path) -> DatasetContract:
        raw = path.read_bytes()
        try:
            spec: dict[str, Any] = orjson.loads(raw)
            columns = tuple(
                Column(
                    name=c["name"],
                    type=c["type"],
                    nullable=bool(c.get("nullable", False)),
                    min=c.get("min"),
                    max=c.get("max"),
                    categories=tuple(c.get("categories", ())),
                    feature=bool(c.get("feature", True)),
                )
                for c in spec["columns"]
            )
            contract = cls(
                name=spec["name"],
                target=spec["target"],
                min_rows=int(spec.get("min_rows", 1)),
                columns=columns,
                null_tokens=tuple(spec.get("null_tokens", ("",))),
                sha256=hashlib.sha256(raw).hexdigest(),
            )
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"invalid dataset contract {path}: {exc!r}") from exc
        contract._check(path)
        return contract

    def _check(self, path: Path) -> None:
        names = [c.name for c in self.columns]
        problems = []
        if len(set(names)) != len(names):
            problems.append("duplicate column names")
        if self.target not in names:
            problems.append(f"target {self.target!r} is not a column")
        for c in self.columns:
            if c.type not in ("number", "integer", "category", "boolean"):
                problems.append(f"column {c.name!r} has unknown type {c.type!r}")
            if c.type == "category" and not c.categories:
                problems.append(f"category column {c.name!r} lists no categories")
        if not self.features:
            problems.append("the contract has no feature columns")
        if problems:
            raise ConfigError(f"invalid dataset contract {path}: " + "; ".join(problems))
