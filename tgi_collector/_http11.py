"""The client side of HTTP/1.1 as bytes: a GET request and the framing of its response.

Sans I/O: :class:`ResponseParser` is fed the bytes a connection receives and says when the
response head is complete, which body bytes arrived and when the message ends; the
connection and its socket live in :mod:`tgi_collector._http`. Split so that the framing rules,
where the subtle bugs of an HTTP client hide, are tested byte by byte without sockets.

What is understood (RFC 9112), strictly, because a collector talks to servers it does not trust:

- a status line ``HTTP/1.0`` or ``HTTP/1.1``, a three-digit code and a reason; header lines
  ``name: value`` (names of token characters, no obsolete line folding); ``CRLF`` or a bare
  ``LF`` ending lines; a head of at most 64 KiB and 200 header lines;
- interim ``1xx`` responses are skipped, at most 16 of them (``101`` is refused: a GET never
  asks to switch);
- a body framed by ``Transfer-Encoding: chunked`` (extensions and trailers read and
  ignored), else by ``Content-Length`` (one value, or repeats of the same value), else by the
  end of the connection; no body after ``204`` and ``304``.

A violation raises :class:`ProtocolViolation` with a message fit for a scrape error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_HEAD_BYTES", "ProtocolViolation", "ResponseHead", "ResponseParser", "request"]

MAX_HEAD_BYTES: Final = 64 * 1024
_MAX_HEADER_LINES: Final = 200
# Servers send one 100 Continue or 103 Early Hints; a stream of them is an attack on our CPU.
_MAX_INTERIM: Final = 16
_MAX_CHUNK_LINE: Final = 4096
_STATUS_LINE: Final = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX: Final = re.compile(rb"[0-9A-Fa-f]{1,16}")


class ProtocolViolation(Exception):
    """The server's bytes are not a valid HTTP/1.1 response."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """Status and headers of a response. ``headers`` maps lower-case names to values;
    repeated headers are joined with ``", "`` (RFC 9110 field combination)."""

    minor_version: int
    status: int
    reason: str
    headers: dict[str, str]


def request(target: str, headers: list[tuple[str, str]]) -> bytes:
    """The bytes of ``GET target HTTP/1.1`` with ``headers`` (the caller's, already safe)."""
    lines = [f"GET {target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _head_end(buffer: bytearray) -> tuple[int, int] | None:
    """Where the head ends in ``buffer``: (end of its last line, start of the body)."""
    crlf = buffer.find(b"\n\r\n")
    lf = buffer.find(b"\n\n")
    if crlf < 0 and lf < 0:
        return None
    if lf < 0 or 0 <= crlf < lf:
        return crlf, crlf + 3
    return lf, lf + 2


def _parse_head(data: bytes) -> ResponseHead:
    lines = data.split(b"\n")
    if len(lines) > _MAX_HEADER_LINES + 1:
        raise ProtocolViolation(f"more than {_MAX_HEADER_LINES} header lines")
    status_line = lines[0].removesuffix(b"\r")
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise ProtocolViolation(f"invalid status line {_shown(status_line)}")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        line = raw.removesuffix(b"\r")
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None or b"\r" in value or b"\x00" in value:
            raise ProtocolViolation(f"invalid header line {_shown(line)}")
        text = value.strip(b" \t").decode("latin-1")
        key = name.decode("ascii").lower()
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    reason = (match.group(3) or b"").decode("latin-1")
    return ResponseHead(int(match.group(1)), int(match.group(2)), reason, headers)


def _shown(data: bytes, limit: int = 80) -> str:
    """Bytes for an error message: cut, non-printable characters escaped."""
    return repr(data[:limit]) + ("..." if len(data) > limit else "")


def _content_length(headers: dict[str, str]) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    values = {part.strip() for part in value.split(",")}
    if len(values) != 1:
        raise ProtocolViolation(f"conflicting Content-Length {value!r}")
    (single,) = values
    if not single.isascii() or not single.isdigit() or len(single) > 18:
        raise ProtocolViolation(f"invalid Content-Length {value[:40]!r}")
    return int(single)


# Body framings.
_LENGTH, _CHUNKED, _UNTIL_CLOSE = "length", "chunked", "until close"
# States of the chunked decoder.
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class ResponseParser:
    """Frames one response to a GET. Feed it bytes with :meth:`feed`, the end of the
    connection with :meth:`feed_eof`; read :attr:`head`, :meth:`take_body`, :attr:`done`.

    ``reusable`` tells, once :attr:`done`, whether the connection may carry another request.
    """

    def __init__(self) -> None:
        self.head: ResponseHead | None = None
        self.done = False
        self.reusable = False
        self._buffer = bytearray()  # bytes of the head, or of chunked framing, not yet used
        self._body: list[bytes] = []
        self._framing = _LENGTH
        self._remaining = 0  # body bytes still expected (length) or left in this chunk
        self._chunk_state = _SIZE
        self._interim = 0  # 1xx heads skipped
        self.started = False  # whether any byte of the response came (for retry decisions)
        self.buffered = 0  # body bytes received and not taken yet

    def take_body(self) -> list[bytes]:
        """The body bytes received since the last call, in order."""
        body, self._body = self._body, []
        self.buffered = 0
        return body

    def feed(self, data: bytes) -> None:
        """Consume bytes from the connection; raises ProtocolViolation."""
        if self.done:
            if data:
                # A server may not send beyond the response; such a connection is not reused.
                self.reusable = False
            return
        if self.head is None:
            self.started = self.started or bool(data)
            self._buffer += data
            data = self._read_head()
            if self.head is None:
                return
        if data:
            self._feed_body(data)

    def feed_eof(self) -> None:
        """The server closed the connection; raises ProtocolViolation if a message is cut."""
        if self.done:
            return
        if self.head is None:
            raise ProtocolViolation(
                "connection closed before a response"
                if not self._buffer
                else "connection closed in the middle of the response head"
            )
        if self._framing == _UNTIL_CLOSE:
            self._finish(reusable=False)
            return
        raise ProtocolViolation("connection closed before the end of the body")

    def _read_head(self) -> bytes:
        """Parse heads until a final one; the bytes after it, or b"" while incomplete."""
        while True:
            end = _head_end(self._buffer)
            if end is None:
                # An unfinished head may hold the "\n\r" of its end beyond its MAX_HEAD_BYTES.
                if len(self._buffer) > MAX_HEAD_BYTES + 2:
                    raise ProtocolViolation(f"response head larger than {MAX_HEAD_BYTES} bytes")
                return b""
            if end[0] > MAX_HEAD_BYTES:
                raise ProtocolViolation(f"response head larger than {MAX_HEAD_BYTES} bytes")
            head = _parse_head(bytes(self._buffer[: end[0]]))
            rest = bytes(self._buffer[end[1] :])
            self._buffer.clear()
            if head.status == 101:
                raise ProtocolViolation("unexpected 101 Switching Protocols")
            if 100 <= head.status < 200:  # interim: the final response follows
                self._interim += 1
                if self._interim > _MAX_INTERIM:
                    raise ProtocolViolation(f"more than {_MAX_INTERIM} interim responses")
                self._buffer += rest
                continue
            self._start_body(head)
            return rest

    def _start_body(self, head: ResponseHead) -> None:
        self.head = head
        headers = head.headers
        keep_alive = "close" not in _tokens(headers.get("connection", ""))
        if head.minor_version == 0:
            keep_alive = keep_alive and "keep-alive" in _tokens(headers.get("connection", ""))
        encoding = headers.get("transfer-encoding")
        if head.status in (204, 304):  # no body, whatever the header fields say (RFC 9112 6.3)
            self._framing, self._remaining = _LENGTH, 0
        elif encoding is not None:
            if _tokens(encoding) != ["chunked"]:
                raise ProtocolViolation(f"unsupported Transfer-Encoding {encoding[:40]!r}")
            self._framing = _CHUNKED
            # A message with both is a smuggling attempt or a broken proxy, and chunked in
            # HTTP/1.0 is faulty framing (RFC 9112 6.1): never reuse.
            keep_alive = keep_alive and head.minor_version == 1 and "content-length" not in headers
        else:
            length = _content_length(headers)
            if length is None:
                self._framing = _UNTIL_CLOSE
                keep_alive = False
            else:
                self._framing, self._remaining = _LENGTH, length
        self.reusable = keep_alive
        if self._framing == _LENGTH and self._remaining == 0:
            self._finish(reusable=keep_alive)

    def _feed_body(self, data: bytes) -> None:
        self.buffered += len(data)
        if self._framing == _UNTIL_CLOSE:
            self._body.append(data)
        elif self._framing == _LENGTH:
            if len(data) < self._remaining:
                self._body.append(data)
                self._remaining -= len(data)
                return
            self._body.append(data[: self._remaining])
            extra = len(data) > self._remaining
            self._remaining = 0
            self._finish(reusable=self.reusable and not extra)
        else:
            self._feed_chunked(data)

    def _feed_chunked(self, data: bytes) -> None:
        view = memoryview(data)
        position = 0
        while position < len(view):
            if self._chunk_state == _DATA:
                take = min(self._remaining, len(view) - position)
                self._body.append(bytes(view[position : position + take]))
                position += take
                self._remaining -= take
                if self._remaining == 0:
                    self._chunk_state = _DATA_END
                continue
            newline = data.find(b"\n", position)
            if newline < 0:
                self._buffer += view[position:]
                if len(self._buffer) > _MAX_CHUNK_LINE + 1:  # + the CR of a CRLF
                    raise ProtocolViolation("chunked framing line too long")
                return
            self._buffer += view[position:newline]
            position = newline + 1
            line = bytes(self._buffer).removesuffix(b"\r")
            self._buffer.clear()
            if len(line) > _MAX_CHUNK_LINE:
                raise ProtocolViolation("chunked framing line too long")
            self._chunk_line(line)
            if self.done:
                if position < len(view):
                    self.reusable = False
                return

    def _chunk_line(self, line: bytes) -> None:
        if self._chunk_state == _DATA_END:
            if line:
                raise ProtocolViolation("chunk data longer than its size")
            self._chunk_state = _SIZE
        elif self._chunk_state == _SIZE:
            size = line.partition(b";")[0].strip(b" \t")
            if _HEX.fullmatch(size) is None:
                raise ProtocolViolation(f"invalid chunk size {_shown(line)}")
            self._remaining = int(size, 16)
            self._chunk_state = _DATA if self._remaining else _TRAILER
        elif not line:  # _TRAILER: an empty line ends the message
            self._finish(reusable=self.reusable)
        elif b":" not in line:
            raise ProtocolViolation(f"invalid trailer line {_shown(line)}")

    def _finish(self, *, reusable: bool) -> None:
        self.done = True
        self.reusable = reusable


def _tokens(value: str) -> list[str]:
    """The comma-separated tokens of a header value, lower-cased, empty ones dropped."""
    return [token for part in value.split(",") if (token := part.strip().lower())]
