"""Benchmarks of rrm: propagation (with an etcd watch baseline), footprint, write throughput, reconnect storm.

Run with `make bench` (or `.venv/bin/python -m benchmarks.run --help`); BENCHMARKS.md explains the method.
"""
