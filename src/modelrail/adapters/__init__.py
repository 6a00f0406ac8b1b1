"""Port implementations: ``local`` (embedded mode), ``google`` (cloud and emulator modes)."""
