"""What the environment says: process settings, the event graph, the staging service's settings."""
