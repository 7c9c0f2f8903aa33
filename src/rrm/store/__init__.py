"""Persistence: tables, repositories, migrations and the change feed (SQLite or PostgreSQL)."""

from rrm.store.database import Database

__all__ = ["Database"]
