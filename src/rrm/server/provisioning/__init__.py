"""Provisioning: environments created and deleted by durable, resumable, stage-wise operations."""
