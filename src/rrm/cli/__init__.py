"""The `rrm` command line: the control plane, the agent and the admin API behind one typer app."""
