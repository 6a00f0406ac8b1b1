"""Keeps pandas, scikit-learn and other heavy libraries out of the service process.

The request path needs numpy, msgspec, orjson and LightGBM's C library only.
Installed in the serving process (never in a test runner's), the guard makes
importing any of these an ``ImportError``: libraries that import them optionally
(as ``lightgbm`` does in its ``compat`` module) carry on without them, and a
mistaken direct import fails at start instead of silently slowing every cold start.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import importlib.machinery
    from collections.abc import Sequence
    from types import ModuleType

BLOCKED = frozenset(
    {
        "pandas",
        "sklearn",
        "scipy",
        "pyarrow",
        "polars",
        "dask",
        "distributed",
        "matplotlib",
        "graphviz",
        "mlflow",
        "lightgbm",
    }
)


class _Blocker:
    """A meta path finder (the protocol only: ``importlib.abc`` costs 30 ms to import)."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in BLOCKED:
            raise ImportError(f"{fullname} is kept out of the staging service's process")
        return None


def install() -> None:
    """Block the heavy modules in this process (idempotent)."""
    if not any(isinstance(finder, _Blocker) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Blocker())


def loaded_heavy_modules() -> list[str]:
    """Blocked top-level modules that are nevertheless imported."""
    return sorted({name.partition(".")[0] for name in sys.modules} & BLOCKED)
