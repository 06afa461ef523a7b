"""Logging: one JSON object per line on stderr by default, or plain text for people.

Events carry their facts as fields (`extra=`), so a log pipeline never parses prose:

    {"time": "2026-11-27T09:30:00.123Z", "level": "info", "logger": "agentrouter-auth",
     "message": "key ... (ES256): pending -> active", "event": "key_state_changed",
     "kid": "...", "alg": "ES256", "from": "pending", "to": "active"}

Nothing here ever formats a request's headers: the API keys clients send never reach a log.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

PROG = "agentrouter-auth"
FORMATS = ("json", "text")
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JSONFormatter(logging.Formatter):
    """A log record as one JSON object: time, level, logger, message, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """One line of JSON."""
        moment = datetime.fromtimestamp(record.created, UTC)
        document: dict[str, Any] = {
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`agentrouter-auth: message` for people at a terminal."""

    def __init__(self) -> None:
        super().__init__(f"{PROG}: %(message)s")


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for `json` or `text`."""
    return JSONFormatter() if log_format == "json" else TextFormatter()


def configure(log_format: str = "json", level: int = logging.INFO) -> None:
    """Send every log record to stderr in `log_format`, replacing earlier handlers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def granian_config(log_format: str) -> dict[str, Any]:
    """A logging dictConfig that sends granian's own lines through the same formatter."""
    factory = f"{__name__}.{'JSONFormatter' if log_format == 'json' else 'TextFormatter'}"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"agentrouter": {"()": factory}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "agentrouter",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "_granian": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "granian.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }
