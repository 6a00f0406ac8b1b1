"""The service layer: the pipeline, its stages; rollback, sweep, reconcile, monitor, evolution."""
