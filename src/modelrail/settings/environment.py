"""Settings and the environment variables that carry them, by one table per settings
class: each variable is parsed in one place (``read``) and written back in one place
(``write``) for a child process, whose ``read`` then gives the same values."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple


class Variable(NamedTuple):
    """A settings field, the variable that sets it, and how the variable's text is read."""

    field: str
    name: str
    parse: Callable[[str], Any] = str


def read(table: Iterable[Variable], environ: Mapping[str, str]) -> dict[str, Any]:
    """The fields whose variables are set (and not empty), parsed; ``ValueError`` names
    the variable whose text does not parse."""
    values = {}
    for variable in table:
        text = environ.get(variable.name)
        if text:
            try:
                values[variable.field] = variable.parse(text)
            except ValueError as exc:
                raise ValueError(f"{variable.name}={text!r}: {exc}") from None
    return values


def write(table: Iterable[Variable], settings: object) -> dict[str, str]:
    """The variables that make ``read`` give ``settings``' fields back (None: unset)."""
    env = {}
    for variable in table:
        value = getattr(settings, variable.field)
        if value is not None:
            env[variable.name] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return env
