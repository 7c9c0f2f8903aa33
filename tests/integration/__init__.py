"""Integration tests: real `rrm server` and `rrm agent` processes on loopback, real SQLite files."""
