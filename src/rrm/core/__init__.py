"""The pure domain: no I/O, no imports of other rrm layers. Everything else wraps these functions."""
