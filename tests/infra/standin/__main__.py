"""``python -m tests.infra.standin SCHEMA.json.gz``: what Terraform runs as a provider."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.infra.standin.provider import serve

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write(f"usage: {sys.executable} -m tests.infra.standin SCHEMA.json.gz\n")
        sys.exit(2)
    sys.exit(serve(Path(sys.argv[1])))
