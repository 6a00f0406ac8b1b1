"""The composition root: settings in, a Container of wired ports out."""
