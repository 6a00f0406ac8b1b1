"""Port implementations.

Filesystem (embedded mode), Google Cloud (cloud and emulator modes), local staging.
"""
