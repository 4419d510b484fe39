"""httpx logs each request's full URL at INFO. The URLs our activities POST to can carry
credentials: Slack's incoming-webhook URL is one, and a business's webhook URL may hold a
token in its path or query. This keeps only their origin (`scheme://host[:port]`) in the
log, whatever the process's logging configuration."""

import logging

import httpx


class OriginsOnly(logging.Filter):
    """Replaces the URL of httpx's `HTTP Request: <method> <url> ...` records with its
    origin."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 2 and isinstance(args[1], httpx.URL):
            url = args[1]
            record.args = (args[0], f"{url.scheme}://{url.netloc.decode()}", *args[2:])
        return True


def log_origins_only() -> None:
    """Install the filter on httpx's logger, once."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, OriginsOnly) for f in logger.filters):
        logger.addFilter(OriginsOnly())
