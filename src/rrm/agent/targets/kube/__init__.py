"""The pieces of the Kubernetes target: API calls, objects, watches, restarts."""
