"""HTTP routes: `admin` (operators), `agent` (runtimes), `ops` (probes and metrics)."""
