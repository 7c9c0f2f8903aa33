"""`rrm server` with the open-file limit raised first: 10,000 long-polls are 10,000 sockets.

Usage: python -m benchmarks.serve --port P --data-dir DIR (the same options as `rrm server`).
"""

from __future__ import annotations

import sys

from benchmarks.common import raise_open_files
from rrm.cli.main import main

if __name__ == "__main__":
    raise_open_files()
    sys.argv = ["rrm", "server", *sys.argv[1:]]
    main()
