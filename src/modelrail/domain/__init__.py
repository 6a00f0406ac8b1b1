"""The domain: dataset contract, features, training, evaluation, registry, leases, typed records."""
