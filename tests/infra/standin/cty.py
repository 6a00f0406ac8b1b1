"""cty values as Terraform sends them to providers: MessagePack, with an extension type
for "known after apply" (docs/plugin-protocol/object-wire-format.md in Terraform).

Decoded values are plain Python (dict for objects and maps, list for lists and sets,
None for null) with ``UNKNOWN`` where Terraform does not know a value yet.
"""

from __future__ import annotations

from typing import Any

import msgpack


class Unknown:
    """A value Terraform will only know after apply."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = Unknown()

# cty writes an unknown value as fixext1 type 0; newer versions write unknowns that
# carry refinements (e.g. "not null") as extension type 12.
UNKNOWN_EXTENSION = 0
REFINED_UNKNOWN_EXTENSION = 12


def _ext_hook(code: int, data: bytes) -> Any:
    if code in (UNKNOWN_EXTENSION, REFINED_UNKNOWN_EXTENSION):
        return UNKNOWN
    return msgpack.ExtType(code, data)


def _default(value: Any) -> Any:
    if value is UNKNOWN:
        return msgpack.ExtType(UNKNOWN_EXTENSION, b"\x00")
    raise TypeError(f"cannot encode {value!r}")


def decode(data: bytes) -> Any:
    if not data:
        return None
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def encode(value: Any) -> bytes:
    return msgpack.packb(value, default=_default, use_bin_type=True)
