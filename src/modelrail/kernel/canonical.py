"""The one JSON encoding whose bytes are hashed and signed."""

from __future__ import annotations

from typing import Any

import orjson


def canonical_json(value: Any) -> bytes:
    """Stable bytes for hashing and for create-only comparisons."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
