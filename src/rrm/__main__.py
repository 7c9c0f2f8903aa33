"""`python -m rrm` is the `rrm` command."""

from rrm.cli.main import main

main()
