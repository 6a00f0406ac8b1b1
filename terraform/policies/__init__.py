"""modelrail's custom checkov policies: what checkov's own GCP checks miss.

Loaded with ``checkov --external-checks-dir terraform/policies`` (see tests/infra).
"""
