"""The access log (`RRM_ACCESS_LOG=1`) without query strings: a query may hold a credential (an old sign-in
link, a mistaken script), and logs are kept and shipped where credentials must never go."""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"
PATH_ARGUMENT = 2  # uvicorn logs (client, method, path with query, http version, status)
REDACTED = "?[redacted]"


class QueryRedaction(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > PATH_ARGUMENT:
            target = args[PATH_ARGUMENT]
            if isinstance(target, str) and "?" in target:
                path = target.split("?", 1)[0] + REDACTED
                record.args = (*args[:PATH_ARGUMENT], path, *args[PATH_ARGUMENT + 1 :])
        return True


def redact_query_strings() -> None:
    """Install once uvicorn has configured its loggers (`uvicorn.Config` does that)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, QueryRedaction) for f in logger.filters):
        logger.addFilter(QueryRedaction())
