"""Secrets from Secret Manager (cloud mode): a secret version's payload through the REST
API's ``:access`` call, with the function's own credentials. The notifier's account may
access only the secrets Terraform's ``notification_secrets`` names."""

from __future__ import annotations

import base64
import binascii

from modelrail.adapters.google.rest import GoogleRest
from modelrail.kernel.errors import SecretUnavailable


class SecretManagerSecrets:
    """``Secrets`` over Secret Manager: reads ``secret``, a secret version's name."""

    def __init__(self, api_endpoint: str | None = None) -> None:
        self.rest = GoogleRest(
            "Secret Manager", "https://secretmanager.googleapis.com", api_endpoint
        )

    def reveal(self, secret: str | None, variable: str | None) -> str:
        if not secret:
            raise SecretUnavailable(
                "in the cloud a webhook's URL comes from Secret Manager: the entry names no "
                "url_secret (projects/P/secrets/S/versions/V)"
            )
        status, body = self.rest.call("GET", f"/v1/{secret}:access")
        if status in (403, 404):
            raise SecretUnavailable(
                f"Secret Manager: {secret}: HTTP {status} (missing, or not granted)"
            )
        self.rest.check(status, body, f"access {secret}")
        try:
            return base64.b64decode(body["payload"]["data"], validate=True).decode().strip()
        except (KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
            raise SecretUnavailable(f"Secret Manager: {secret}: no readable payload") from exc
