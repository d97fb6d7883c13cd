"""The one error hierarchy of tgi-collector.

Third-party errors (socket, TLS, grpc, protobuf) are translated into these once, at the
boundary where they are caught, with ``raise ... from exc`` so the cause stays visible::

    CollectorError                 base of everything the project raises on purpose
    ├── ExpositionError            malformed Prometheus text; names the 1-based line number
    ├── SampleLimitError           an exposition holds more samples than allowed
    ├── InvalidRequestError        a request field is missing or out of range; names the field
    ├── TargetDeniedError          the target is outside the scrape policy
    ├── CapacityError              a server limit is exhausted (subscribers, targets per stream)
    ├── ConfigError                the configuration (file, environment, flags) is invalid; names
    │                              each key and where its value came from
    └── ScrapeError                a target could not be scraped; carries a ScrapeErrorKind
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

__all__ = [
    "CapacityError",
    "CollectorError",
    "ConfigError",
    "ExpositionError",
    "InvalidRequestError",
    "SampleLimitError",
    "ScrapeError",
    "ScrapeErrorKind",
    "TargetDeniedError",
]


class CollectorError(Exception):
    """Base class of every error tgi-collector raises on purpose."""


class ExpositionError(CollectorError):
    """A Prometheus text exposition could not be parsed.

    ``line_number`` is 1-based; ``line`` is the offending line (truncated for display).
    """

    def __init__(self, message: str, *, line_number: int, line: str = "") -> None:
        self.reason = message
        self.line_number = line_number
        self.line = line[:200]
        super().__init__(f"line {line_number}: {message}")


class SampleLimitError(CollectorError):
    """An exposition holds more samples than the configured limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"exposition has more than {limit} samples")


class InvalidRequestError(CollectorError):
    """A request field is missing or out of range; ``field`` is its dotted proto path."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class TargetDeniedError(CollectorError):
    """The target resolves to an address the scrape policy refuses."""


class CapacityError(CollectorError):
    """A server limit is exhausted: too many subscribers, or too many targets in one stream."""


class ConfigError(CollectorError):
    """The configuration is invalid; nothing was started.

    ``problems`` holds one line per problem, each naming the key path (``policy.allow_networks[2]``)
    and where the value came from (the file, an environment variable or a flag); the message is
    those lines joined by newlines.
    """

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        super().__init__("\n".join(self.problems))


class ScrapeErrorKind(enum.Enum):
    """Why a scrape failed; mirrors ``tgi_collector.v1.ErrorKind``."""

    CONNECT = "connect"
    TIMEOUT = "timeout"
    HTTP_STATUS = "http_status"
    BODY_TOO_LARGE = "body_too_large"
    TOO_MANY_SAMPLES = "too_many_samples"
    PARSE = "parse"
    PROTOCOL = "protocol"
    DENIED = "denied"


class ScrapeError(CollectorError):
    """A target could not be scraped. The scrape is reported as down, never raised to callers."""

    def __init__(
        self, kind: ScrapeErrorKind, message: str, *, http_status: int | None = None
    ) -> None:
        self.kind = kind
        self.message = message
        self.http_status = http_status
        super().__init__(message)
