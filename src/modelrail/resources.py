"""Where the files modelrail ships beside its code live (schemas, topology).

A checkout keeps them at the repository root; ``make stage`` and the Dockerfiles copy
them next to the package. The root is found by walking up from this file.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator


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


@cache
def _config_validator(name: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(
        orjson.loads((schema_dir("config") / f"{name}.schema.json").read_bytes())
    )


def schema_problems(name: str, document: Any) -> list[str]:
    """Every way ``document`` breaks ``schemas/config/<name>.schema.json``: each names
    where (``columns[3].type``) and, for a field that is not allowed, which are."""
    problems = []
    errors = _config_validator(name).iter_errors(document)
    for error in sorted(errors, key=lambda e: [str(part) for part in e.absolute_path]):
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
        ).lstrip(".")
        message = error.message
        properties = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        if error.validator == "additionalProperties" and properties:
            message += f"; allowed: {', '.join(properties)}"
        if error.validator == "required":
            name = str(error.message).split("'")[1]
            choices = properties.get(name, {}).get("enum")
            if choices:
                message += f"; allowed: {', '.join(map(str, choices))}"
        problems.append(f"{where or 'the file'}: {message}")
    return problems
