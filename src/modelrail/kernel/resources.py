"""The files modelrail ships with its code, and where a checkout keeps the rest.

The JSON Schemas of the events, the configuration files and the durable records
(stage records, manifests, candidates, lineage, publications) are package data
(``modelrail/schemas/``): every installed copy carries them, whatever runs it (the
staging image, a Cloud Function's staged folder, the training job). The event graph
(``topology.yaml``) and the functions' sources live at the root of a checkout, which
only the commands that run from one need (``modelrail up --emulators``, the default
topology of a local run); deployments name their topology with ``MODELRAIL_TOPOLOGY``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from modelrail.kernel.errors import ConfigError

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

_PACKAGE = Path(__file__).resolve().parent.parent  # modelrail/


def schema_dir(kind: str) -> Path:
    """``modelrail/schemas/<kind>``: ``events``, ``config`` or ``records``."""
    return _PACKAGE / "schemas" / kind


@cache
def checkout_root() -> Path:
    """The checkout this package runs from: the nearest ancestor holding
    ``topology.yaml``. An installed copy has none, and says so."""
    for candidate in _PACKAGE.parents:
        if (candidate / "topology.yaml").is_file():
            return candidate
    raise ConfigError(
        f"modelrail runs from an installed copy ({_PACKAGE}), not a checkout: set"
        " MODELRAIL_TOPOLOGY to the topology.yaml this deployment uses"
    )


@cache
def _validator(kind: str, name: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator, FormatChecker
    from referencing import Registry, Resource

    directory = schema_dir(kind)
    # A schema may refer to its siblings by their ``$id`` (a manifest to the lineage).
    siblings = [orjson.loads(path.read_bytes()) for path in sorted(directory.glob("*.json"))]
    registry: Registry[Any] = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in siblings if "$id" in schema
    )
    return Draft202012Validator(
        orjson.loads((directory / f"{name}.schema.json").read_bytes()),
        registry=registry,
        format_checker=FormatChecker(),
    )


def schema_problems(name: str, document: Any, *, kind: str = "config") -> list[str]:
    """Every way ``document`` breaks ``schemas/<kind>/<name>.schema.json``: each names
    where (``columns[3].type``) and, for a field that is not allowed, which are."""
    problems = []
    errors = _validator(kind, name).iter_errors(document)
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
