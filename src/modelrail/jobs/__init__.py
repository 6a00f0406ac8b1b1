"""Cloud Run job entry points."""
