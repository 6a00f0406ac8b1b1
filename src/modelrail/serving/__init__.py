"""The staging service: a Flask app, served by granian, that answers with one model version.

``create_app`` (in ``modelrail.serving.app``) builds it as ``python -m
modelrail.serving.server`` runs it (``server``). The request path
(``modelrail.domain.decoding``: parse and validate; ``predictor``: LightGBM's C library
through ctypes, or the compiled predictor; ``modelrail.kernel.problems``: RFC 9457
errors; the decoder sits in the domain because the training job holds the compiled
body reader to it) uses Flask, msgspec, orjson and numpy only: no pandas, no
scikit-learn, and not even the ``lightgbm`` Python package, whose import pulls in scipy
and, where installed, pandas and scikit-learn.
"""
