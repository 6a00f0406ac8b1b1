"""Secrets on this machine (embedded and emulator mode): the process's environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

from modelrail.kernel.errors import SecretUnavailable


class EnvironmentSecrets:
    """``Secrets`` from environment variables: reads ``variable``."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def reveal(self, secret: str | None, variable: str | None) -> str:
        if not variable:
            raise SecretUnavailable(
                "on this machine a webhook's URL comes from an environment variable: the "
                "entry names no url_env"
            )
        value = self.environ.get(variable, "").strip()
        if not value:
            raise SecretUnavailable(f"the environment variable {variable} is not set")
        return value
