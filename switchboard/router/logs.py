"""The router's log: where it goes, how a line looks, and the loggers that write it.

One line per event that matters to an operator.  Each line about a connection carries the
connection's id (``c17``: unique within the process, also the ``id`` of the connection's
row in the ``connections`` view), so its open and its close can be matched.  At ``info`` a
busy router stays readable: connections, neighbours, queues, shutdown and reload; link
attach and detach are ``debug``; nothing is ever logged per message.

Lines go to stderr, as text (``time LEVEL logger: message``) or as JSON, one object per
line, with the structured fields of the event (``conn``, ``peer``, ``router``...) as keys.
A call site hands those fields over as ``extra=fields(conn=..., ...)``; the text format
shows only the message, which names the same things.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Iterable

__all__ = [
    "LOGGERS", "JsonFormatter", "TEXT_FORMAT", "configure_logging", "fields",
]

LOGGERS = {
    "switchboard.router": "start, listeners, connectors, shutdown",
    "switchboard.router.connections": "connections opened, closed and refused",
    "switchboard.router.links": "links attached and detached (debug); links closed with an error",
    "switchboard.router.auth": "failed logins, blocked hosts",
    "switchboard.router.policy": "policy denials (once per cause and minute)",
    "switchboard.router.network": "inter-router neighbours up and down, duplicate router ids",
    "switchboard.router.queues": "queues created, recovered, expired, purged, deleted; store errors",
    "switchboard.router.config": "configuration reloads",
    "switchboard.router.admin": "the admin listener",
    "switchboard.io": "transport: TLS handshakes, connections dropped after the close grace",
    "switchboard.store": "the queue store (SQLite, PostgreSQL)",
}
"""The loggers the router writes to, and what each tells: names for ``[logging.levels]``."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# Attributes every LogRecord has: anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def fields(**values: Any) -> dict[str, Any]:
    """``extra`` for a log call: structured fields the JSON format shows as keys."""
    return {"fields": values}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601, milliseconds), ``level``,
    ``logger``, ``message``, ``router``, the event's fields, and ``exception`` if any."""

    def __init__(self, router_id: str | None = None) -> None:
        super().__init__()
        self.router_id = router_id

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.router_id is not None:
            line["router"] = self.router_id
        event_fields = getattr(record, "fields", None)
        if isinstance(event_fields, dict):
            for key, value in event_fields.items():
                line.setdefault(key, value)
        for key, value in vars(record).items():
            # ``extra`` given by other code (libraries, or a call without fields())
            if key not in _RECORD_ATTRIBUTES and key != "fields":
                line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


_installed: logging.Handler | None = None
_levelled: set[str] = set()


def configure_logging(
    level: str,
    log_format: str = "text",
    levels: Iterable[tuple[str, str]] = (),
    router_id: str | None = None,
) -> None:
    """Send the log to stderr in ``log_format`` ("text" or "json"), at ``level``, with
    ``levels`` (logger name, level) overriding it for those loggers and those below them.

    Called again (a configuration reload), it replaces what it set before.
    """
    global _installed
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(router_id))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    if _installed is not None:
        root.removeHandler(_installed)
    root.addHandler(handler)
    _installed = handler
    root.setLevel(level.upper())
    for name in _levelled:
        logging.getLogger(name).setLevel(logging.NOTSET)
    _levelled.clear()
    for name, module_level in levels:
        logging.getLogger(name).setLevel(module_level.upper())
        _levelled.add(name)


