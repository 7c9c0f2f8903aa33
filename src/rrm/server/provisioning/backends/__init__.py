"""Provisioning backends, one module each behind `base.Backend`."""
