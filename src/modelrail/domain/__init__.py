"""The domain: dataset contract, features, training, evaluation, registry and run records, cards."""
