"""The gunicorn entry point: ``gunicorn -c python:modelrail.serving.gunicorn_conf
'modelrail.serving.wsgi:create_app()'`` (``services/staging/gunicorn.conf.py`` is the same).

Before the factory runs it blocks the heavy libraries that nothing on the request
path needs, so a stray import fails loudly instead of costing the process a second
of start-up and hundreds of megabytes (see ``importguard``).
"""

from __future__ import annotations

from flask import Flask


def create_app() -> Flask:
    from modelrail.serving import importguard
    from modelrail.serving.app import create_app as build

    importguard.install()
    return build()
