"""The Open Service Broker API v2.17: one router over a `BrokerBackend` (the registry, or a catalog file)."""
