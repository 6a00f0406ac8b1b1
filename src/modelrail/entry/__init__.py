"""Entry points: the CLI, the Cloud Functions, the jobs, init, the local stack commands."""
