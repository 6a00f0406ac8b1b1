"""Ports over Google Cloud's APIs (cloud mode; emulator mode against the local cloud)."""
