"""The Environment Broker: platforms (a Cloud Foundry marketplace, a Service Catalog) order, update, suspend
and delete rrm environments through the Open Service Broker API, at `/environments/v2/…`."""
