"""The domain: contracts, features, training, evaluation, registry, leases, monitoring, records."""
