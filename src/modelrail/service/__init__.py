"""The service layer: the pipeline running stage handlers; rollback, sweep, reconcile beside it."""
