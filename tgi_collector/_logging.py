"""Log set-up for the command line: text lines for people, JSON lines for log pipelines.

``--log-format json`` writes one JSON object per line to stderr, the shape log shippers (Loki,
Elasticsearch, Cloud Logging) parse without a grok pattern::

    {"time": "2026-11-28T03:04:05.678Z", "level": "WARNING", "logger": "tgi_collector.scraper",
     "message": "scrape of http://tgi-0:8080/metrics failed: connect: ...",
     "target": "http://tgi-0:8080/metrics", "error_kind": "connect"}

Fields a call passes with ``extra=`` (such as ``target`` and ``error_kind``) become keys of the
object; a traceback becomes ``exception``. Whatever the format, a message that carries a bearer
token or a password in a URL is masked before it is written: the places that log are careful
never to pass one, and this is the net under them.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

__all__ = ["JsonFormatter", "RedactingFilter", "configure_logging"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

# A credential after "Bearer": 12 or more token characters, so that prose such as "no bearer
# tokens required" stays readable.
_BEARER = re.compile(r"(?i)\b(bearer\s+)(?=[\w.~+/=-]{12,})[^\s\"',;]+")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@")


def _redact(text: str) -> str:
    text = _BEARER.sub(r"\1<redacted>", text)
    return _URL_PASSWORD.sub(r"\1<redacted>@", text)


class RedactingFilter(logging.Filter):
    """Masks bearer tokens and URL passwords in a record's message (always passes the record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # The formatted message replaces msg and args either way, so that the formatter does
        # not format the record a second time.
        record.msg, record.args = _redact(record.getMessage()), None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ms), level, logger, message, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.gmtime(record.created)
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an odd extra value must never cost the log line.
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str) -> None:
    """Send the root logger's records to stderr at ``level`` as ``text`` or ``json`` lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    handler.addFilter(RedactingFilter())
    # Without force: a host that configured logging first (pytest, an embedding program) keeps it.
    logging.basicConfig(level=level, handlers=[handler])
