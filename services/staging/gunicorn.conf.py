"""gunicorn settings of the staging service; they live in the package so that the
local deployer and the image use the same ones (``-c python:modelrail.serving.gunicorn_conf``
works too)."""

from modelrail.serving.gunicorn_conf import *  # noqa: F403
