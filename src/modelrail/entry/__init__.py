"""Entry points: the CLI, the Cloud Functions, the training job, init, the local stack commands."""
