"""The staging service: a Flask app factory behind a WSGI fast path, served by granian.

``create_app`` (in ``modelrail.serving.app``) is the service's composition root, and
``create_service`` the same service as ``python -m modelrail.serving.server`` runs it
(``server``); the gunicorn entry point (``wsgi``, ``gunicorn_conf``) is kept. The
request path (``requests``: parse and validate, ``predictor``: LightGBM's C library
through ctypes, ``problems``: RFC 9457 errors) uses msgspec, orjson and numpy only:
no pandas, no scikit-learn, and not even the ``lightgbm`` Python package, whose
import pulls in scipy and, where installed, pandas and scikit-learn.
"""
