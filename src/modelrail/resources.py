"""Where the files modelrail ships beside its code live (schemas, topology).

A checkout keeps them at the repository root; ``make stage`` and the Dockerfiles copy
them next to the package. The root is found by walking up from this file.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def root() -> Path:
    """The nearest ancestor of the package holding ``schemas/events``."""
    here = Path(__file__).resolve().parent
    for candidate in (here, *here.parents):
        if (candidate / "schemas" / "events").is_dir():
            return candidate
    raise FileNotFoundError(
        "modelrail's schemas/ folder was not found next to the package or above it"
    )


def schema_dir(kind: str) -> Path:
    return root() / "schemas" / kind
