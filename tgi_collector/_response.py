"""The response side of a scrape's HTTP GET: the body, read within limits, or a ScrapeError.

What is here: the streamed body reader (decompression of ``gzip``/``deflate`` with the limit
counted on decompressed bytes, so a gzip bomb stops one chunk past it), the check of
``Content-Encoding``, the strict UTF-8 decoding of a ``/metrics`` body, and the translation of a
non-2xx status into :class:`~tgi_collector.errors.ScrapeError` with a human message. The
rules themselves are documented in :mod:`tgi_collector.scraper`.

Why it is separate: all of it works on bytes and headers handed to it and does no
I/O of its own, while :mod:`tgi_collector.scraper` runs the exchange (the client, the deadline,
the parser and ``/info`` caches). The names here are private to the package; the scraper is
their only user.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from tgi_collector.errors import ScrapeError, ScrapeErrorKind

__all__ = [
    "BodyReader",
    "content_encoding",
    "decode_utf8",
    "status_failure",
]

_COMPRESSED_ENCODINGS = frozenset({"gzip", "x-gzip", "deflate"})
# zlib window bits: 32 + 15 auto-detects a gzip or zlib header (RFC 9110 "deflate" is zlib).
_WBITS_AUTO = 47


class BodyReader:
    """Accumulates a response body, decompressing it and enforcing the limit as bytes arrive."""

    def __init__(self, encoding: str, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self.size = 0
        self._compressed = encoding != "identity"
        self._inflater = zlib.decompressobj(_WBITS_AUTO) if self._compressed else None
        self._fed = False

    def feed(self, data: bytes) -> None:
        """Add raw (possibly compressed) bytes; raises ScrapeError past the limit or on bad data."""
        if not data:
            return
        self._fed = True
        if self._inflater is None:
            self._append(data)
            return
        try:
            while data:
                # max_length caps what one call may produce: one byte past the limit is enough
                # to know the body is too large, whatever the compression ratio.
                out = self._inflater.decompress(data, self._limit - self.size + 1)
                self._append(out)
                data = self._inflater.unconsumed_tail
                if self._inflater.eof and self._inflater.unused_data:
                    # Concatenated gzip members form one valid gzip body.
                    data = self._inflater.unused_data
                    self._inflater = zlib.decompressobj(_WBITS_AUTO)
        except zlib.error as exc:
            raise ScrapeError(ScrapeErrorKind.PROTOCOL, f"invalid compressed body ({exc})") from exc

    def finish(self) -> bytes:
        """The whole decompressed body; raises ScrapeError if a compressed stream was cut short."""
        if self._inflater is not None and self._fed and not self._inflater.eof:
            raise ScrapeError(ScrapeErrorKind.PROTOCOL, "compressed body is truncated")
        return b"".join(self._parts)

    def _append(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._limit:
            what = "decompressed body" if self._compressed else "body"
            raise ScrapeError(ScrapeErrorKind.BODY_TOO_LARGE, f"{what} exceeds {self._limit} bytes")
        self._parts.append(data)


def content_encoding(headers: Mapping[str, str]) -> str:
    """``identity``, ``gzip``, ``x-gzip`` or ``deflate``; ScrapeError for anything else."""
    header = headers.get("content-encoding", "")
    codings = [c.strip().lower() for c in header.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return "identity"
    if len(codings) == 1 and codings[0] in _COMPRESSED_ENCODINGS:
        return codings[0]
    raise ScrapeError(
        ScrapeErrorKind.PROTOCOL, f"unsupported Content-Encoding {_printable(header)!r}"
    )


def _printable(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters with control characters replaced (for messages)."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return cleaned + ("..." if len(text) > limit else "")


def status_failure(status: int, reason: str, headers: Mapping[str, str]) -> ScrapeError:
    """The HTTP_STATUS error of a non-2xx response (a 3xx says where it pointed)."""
    message = f"HTTP {status}"
    reason = _printable(reason, 100)
    if reason:
        message += f" {reason}"
    if 300 <= status < 400:
        location = headers.get("location")
        target = f" to {_printable(location)}" if location else ""
        message += f" (redirect{target} not followed)"
    return ScrapeError(ScrapeErrorKind.HTTP_STATUS, message, http_status=status)


def decode_utf8(body: bytes) -> str:
    """Decode strictly; invalid UTF-8 is a PARSE error naming the line and byte offset."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body.count(b"\n", 0, exc.start) + 1
        raise ScrapeError(
            ScrapeErrorKind.PARSE,
            f"line {line}: invalid UTF-8 (byte 0x{body[exc.start]:02x} at offset {exc.start})",
        ) from exc
