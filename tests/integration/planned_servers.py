"""`rrm server --plans FILE` for the environment tests, one per test, on the module's database backend."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from .databases import database_for
from .harness import ServerProcess


class PlannedServer(ServerProcess):
    """`rrm server --plans FILE`."""

    def __init__(self, plans: Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plans = plans

    def _launch(self, args: list[str], env: Mapping[str, str] | None = None) -> None:
        super()._launch([*args, "--plans", str(self.plans)], env)


Server = TypeVar("Server", bound=PlannedServer)


@contextmanager
def running_planned_server(
    directory: Path, backend: str, plans: str, server_class: type[Server]
) -> Iterator[Server]:
    """A started `server_class` reading `plans` (YAML text), its files in `directory`; stopped after."""
    (directory / "plans.yaml").write_text(plans)
    with database_for(backend) as database_url:
        server = server_class(
            directory / "plans.yaml", directory / "data", directory / "server.log", database_url=database_url
        )
        server.start()
        try:
            yield server
        finally:
            server.stop()
