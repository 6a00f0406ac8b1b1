"""The staging service: one WSGI callable for every route, served by granian (RSGI).

``create_service`` (in ``modelrail.serving.app``) is the service's composition root,
as ``python -m modelrail.serving.server`` runs it (``server``); ``create_app`` wraps it
in a Flask app; ``supervisor`` owns the local staging port and its servers. The
request path (``modelrail.domain.decoding``: parse and validate, ``predictor``: LightGBM's C
library through ctypes, ``modelrail.kernel.problems``: RFC 9457 errors; the first two are
outside this package because the training job holds the compiled body reader to the
same decoder) uses msgspec, orjson and numpy only:
no pandas, no scikit-learn, and not even the ``lightgbm`` Python package, whose
import pulls in scipy and, where installed, pandas and scikit-learn.
"""
