"""Port implementations: filesystem and in-process (embedded), Google Cloud (cloud and emulators), local staging."""
