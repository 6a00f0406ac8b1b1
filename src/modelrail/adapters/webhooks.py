"""Webhook posts over HTTP(S) with ``requests``, the same in every mode."""

from __future__ import annotations

import requests

# A webhook answers at once or not at all: a slow one must not hold the notifier's
# delivery (its subscription's ack deadline) nor anything behind it in embedded mode.
POST_TIMEOUT_S = 10.0


class HttpWebhooks:
    """``Webhooks``: one POST with a JSON body, no redirects followed, a short timeout."""

    def __init__(self, timeout_s: float = POST_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s

    def post(self, url: str, body: bytes) -> int:
        try:
            response = requests.post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=self.timeout_s,
                allow_redirects=False,
            )
        except requests.Timeout as exc:
            raise TimeoutError(f"no answer within {self.timeout_s:g} s") from exc
        except requests.RequestException as exc:
            raise ConnectionError(f"{type(exc).__name__}") from exc
        response.close()
        return int(response.status_code)
