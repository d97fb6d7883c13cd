"""What to scrape and how: targets, scrape options, and their validation.

Requests arrive from untrusted callers, so every field is checked here, once, before any
network work; a bad field raises :class:`~tgi_collector.errors.InvalidRequestError` naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

from tgi_collector.errors import InvalidRequestError

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_SAMPLES",
    "DEFAULT_TIMEOUT_SECONDS",
    "MAX_BODY_BYTES",
    "MAX_INSTANCE_ID_LENGTH",
    "MAX_SAMPLES",
    "MAX_TIMEOUT_SECONDS",
    "MAX_URL_LENGTH",
    "ScrapeOptions",
    "Target",
    "WatchSpec",
    "metrics_url",
    "port_of",
    "redacted_url",
    "validate_instance_id",
    "validate_options",
    "validate_url",
]

DEFAULT_TIMEOUT_SECONDS = 5.0
MAX_TIMEOUT_SECONDS = 60.0
MIN_TIMEOUT_SECONDS = 0.01
# A real TGI scrape is ~100 kB; 16 MiB leaves room for huge label sets and stays cheap.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_BODY_BYTES = 256 * 1024 * 1024
# A real TGI scrape has ~1,900 samples.
DEFAULT_MAX_SAMPLES = 200_000
MAX_SAMPLES = 5_000_000
MAX_INSTANCE_ID_LENGTH = 256
MAX_URL_LENGTH = 2048

_INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]*")


@dataclass(frozen=True, slots=True)
class ScrapeOptions:
    """Limits and extras of one scrape; every field already validated."""

    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_samples: int = DEFAULT_MAX_SAMPLES
    fetch_info: bool = True
    include_raw_metrics: bool = True


@dataclass(frozen=True, slots=True)
class Target:
    """A TGI server to scrape. ``url`` is the full ``/metrics`` URL."""

    instance_id: str
    url: str

    @property
    def label(self) -> str:
        """The ``instance_id`` this target's snapshots carry: the instance id, else the URL."""
        return self.instance_id or self.url

    @property
    def base_url(self) -> str:
        """Scheme and authority of ``url``: where ``/info`` lives."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True, slots=True)
class WatchSpec:
    """A validated Watch request: which targets, how often, how, and what to send."""

    targets: tuple[Target, ...]
    interval_seconds: float
    options: ScrapeOptions
    updates_only: bool = False
    suppress_unchanged: bool = False
    heartbeat_seconds: float | None = None


def port_of(parts: SplitResult) -> int:
    """The port of a split http(s) URL: the one it names, else its scheme's default."""
    return parts.port or (443 if parts.scheme == "https" else 80)


def metrics_url(endpoint: str) -> str:
    """Accept ``http://host:port`` as shorthand for ``http://host:port/metrics``."""
    parts = urlsplit(endpoint)
    if parts.path in ("", "/") and not parts.query:
        return f"{parts.scheme}://{parts.netloc}/metrics"
    return endpoint


def validate_url(url: str, *, field: str = "target.url") -> str:
    """Check that ``url`` is an absolute http(s) URL with a host; return it as a metrics URL."""
    if not url:
        raise InvalidRequestError(field, "must not be empty")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequestError(field, f"must be at most {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise InvalidRequestError(field, "must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequestError(field, f"is not a valid URL ({exc})") from exc
    if not parts.scheme or "://" not in url:
        raise InvalidRequestError(field, "must start with http:// or https://")
    if parts.scheme not in ("http", "https"):
        raise InvalidRequestError(
            field, f"scheme {parts.scheme!r} is not supported (use http or https)"
        )
    if not parts.hostname:
        raise InvalidRequestError(field, "must name a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequestError(field, "must not carry credentials")
    if port == 0:
        raise InvalidRequestError(field, "port must be between 1 and 65535")
    return metrics_url(url)


def validate_instance_id(instance_id: str, *, field: str = "target.instance_id") -> str:
    """Check an instance id: optional, at most 256 characters of ``[A-Za-z0-9._:/@-]``."""
    if len(instance_id) > MAX_INSTANCE_ID_LENGTH:
        raise InvalidRequestError(field, f"must be at most {MAX_INSTANCE_ID_LENGTH} characters")
    if instance_id and not _INSTANCE_ID.fullmatch(instance_id):
        raise InvalidRequestError(
            field,
            "may hold only letters, digits and . _ : / @ -, starting with a letter or digit",
        )
    return instance_id


def validate_options(
    *,
    timeout_seconds: float = 0.0,
    max_body_bytes: int = 0,
    max_samples: int = 0,
    fetch_info: bool = True,
    include_raw_metrics: bool = True,
    field: str = "options",
) -> ScrapeOptions:
    """Build :class:`ScrapeOptions` from request values, where 0 means the default."""
    if timeout_seconds == 0:
        timeout_seconds = DEFAULT_TIMEOUT_SECONDS
    elif not MIN_TIMEOUT_SECONDS <= timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise InvalidRequestError(
            f"{field}.timeout",
            f"must be between {MIN_TIMEOUT_SECONDS} s and {MAX_TIMEOUT_SECONDS:g} s (0 = default)",
        )
    if max_body_bytes == 0:
        max_body_bytes = DEFAULT_MAX_BODY_BYTES
    elif not 1 <= max_body_bytes <= MAX_BODY_BYTES:
        raise InvalidRequestError(
            f"{field}.max_body_bytes", f"must be between 1 and {MAX_BODY_BYTES} (0 = default)"
        )
    if max_samples == 0:
        max_samples = DEFAULT_MAX_SAMPLES
    elif not 1 <= max_samples <= MAX_SAMPLES:
        raise InvalidRequestError(
            f"{field}.max_samples", f"must be between 1 and {MAX_SAMPLES} (0 = default)"
        )
    return ScrapeOptions(
        timeout_seconds=timeout_seconds,
        max_body_bytes=max_body_bytes,
        max_samples=max_samples,
        fetch_info=fetch_info,
        include_raw_metrics=include_raw_metrics,
    )


def redacted_url(url: str) -> str:
    """``url`` without user information, query and fragment: what logs and metric labels show.

    Credentials hide in ``user:pass@`` and tokens in query strings; neither is ever shown.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(invalid URL)"
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
