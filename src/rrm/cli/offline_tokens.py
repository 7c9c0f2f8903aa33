"""`rrm token create --data-dir DIR [--database-url URL]`: the way back in when no admin token works any
more (each expired or was revoked). The token is written straight into the control plane's database, so
the command needs what `rrm server` needs to open it, and whoever has that can change everything rrm stores
anyway. Nothing is minted without an operator asking: a server never creates a token of its own accord
after its first start. The running control plane accepts the new token at once."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from rrm.server.settings import ServerSettings

OFFLINE_NOTE = "written to the database by rrm token create --data-dir, not through the API"


class NoDatabase(Exception):
    """Nothing to write into: the data dir or database given is not a control plane's."""


def create_in_database(
    data_dir: Path | None, database_url: str | None, role: str, description: str, ttl_seconds: int | None
) -> dict[str, Any]:
    """The created token and its view, as `POST /api/v1/tokens` answers; an event records how it came."""
    from sqlalchemy.exc import SQLAlchemyError

    from rrm.server.api.tokens import token_view
    from rrm.server.auth import ADMIN_TOKEN_PREFIX, new_token, token_hash
    from rrm.server.state import utcnow
    from rrm.store import Database
    from rrm.store import repositories as repo
    from rrm.store import tokens as token_store
    from rrm.store.database import first_line

    url = ServerSettings.from_env(data_dir=data_dir, database_url=database_url).resolved_database_url
    sqlite_file = Path(url.split(":///", 1)[1]) if url.startswith("sqlite") else None
    if sqlite_file is not None and not sqlite_file.is_file():  # opening it would create an empty one
        raise NoDatabase(
            f"no control plane database at {sqlite_file}: give the --data-dir (or --database-url) "
            "that rrm server uses"
        )
    db = Database(url)
    token = new_token(ADMIN_TOKEN_PREFIX)
    hashed, now = token_hash(token), utcnow()
    expires = now + timedelta(seconds=ttl_seconds) if ttl_seconds else None
    try:
        with db.write() as session:
            row = token_store.add_token(session, hashed, role, description, now, expires)
            message = f"role {role}" + (f": {description}" if description else "") + f" ({OFFLINE_NOTE})"
            repo.record_event(session, "TokenCreated", f"token/{token_store.token_id(hashed)}", message, now)
            view = token_view(row, now)
    except SQLAlchemyError as exc:
        raise NoDatabase(f"cannot store the token: {first_line(getattr(exc, 'orig', exc))}") from None
    finally:
        db.dispose()
    return {"token": token, **view}
