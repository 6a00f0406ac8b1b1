"""The staging service: one WSGI callable for every route, served by granian (RSGI).

``create_service`` (in ``modelrail.serving.app``) is the service's composition root,
as ``python -m modelrail.serving.server`` runs it (``server``); ``create_app`` wraps it
in a Flask app; ``supervisor`` owns the local staging port and its servers. The
request path (``requests``: parse and validate, ``predictor``: LightGBM's C library
through ctypes, ``problems``: RFC 9457 errors) uses msgspec, orjson and numpy only:
no pandas, no scikit-learn, and not even the ``lightgbm`` Python package, whose
import pulls in scipy and, where installed, pandas and scikit-learn.
"""
