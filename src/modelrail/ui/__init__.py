"""``modelrail ui``: a small, read-only web view of the run history and the registry.

Server-rendered HTML (Jinja templates and one stylesheet shipped with the package, no
JavaScript, nothing fetched from elsewhere), over the same ``RunLog`` and ``Registry``
every mode uses, so it shows embedded, emulator and cloud state alike.
"""

from __future__ import annotations

from modelrail.ui.app import create_app

__all__ = ["create_app"]
