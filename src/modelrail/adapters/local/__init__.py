"""Ports on this machine: filesystem buckets, in-process bus, local signing, catalog, staging."""
