"""The HTTP/1.1 response framing, sans I/O: the same bytes give the same message however split.

Every row is a response as a server could send it; the expectations are read off the bytes
(RFC 9112). Each valid row is fed whole, byte by byte, and in random pieces (hypothesis), and
must give the same head, body, end and reusability each time; each invalid row must raise
:class:`ProtocolViolation` with the same message each time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tgi_collector._http11 import (
    MAX_HEAD_BYTES,
    ProtocolViolation,
    ResponseHead,
    ResponseParser,
    request,
)

MAX_CHUNK_LINE = 4096  # _http11._MAX_CHUNK_LINE, the documented 4 KiB
MAX_HEADER_LINES = 200


@dataclass(frozen=True, slots=True)
class Outcome:
    head: ResponseHead | None
    body: bytes
    done_before_eof: bool
    done: bool
    reusable: bool


def run(pieces: Iterable[bytes], *, eof: bool) -> Outcome:
    """Feed ``pieces`` (taking the body after each, as the connection does), then maybe EOF."""
    parser = ResponseParser()
    body = bytearray()
    for piece in pieces:
        parser.feed(piece)
        body += b"".join(parser.take_body())
    done_before_eof = parser.done
    if eof:
        parser.feed_eof()
        body += b"".join(parser.take_body())
    return Outcome(parser.head, bytes(body), done_before_eof, parser.done, parser.reusable)


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# -- valid responses ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Valid:
    raw: bytes
    head: ResponseHead
    body: bytes
    reusable: bool
    eof: bool = False  # framed by the end of the connection


def head(status: int, reason: str, headers: dict[str, str], minor: int = 1) -> ResponseHead:
    return ResponseHead(minor, status, reason, headers)


CHUNKED = {"transfer-encoding": "chunked"}

VALID = [
    pytest.param(
        Valid(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
            head(200, "OK", {"content-length": "5", "content-type": "text/plain"}),
            b"hello",
            reusable=True,
        ),
        id="content-length",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            head(200, "OK", {"content-length": "0"}),
            b"",
            reusable=True,
        ),
        id="content-length-zero",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc",
            head(200, "OK", {"content-length": "3"}),
            b"abc",
            reusable=True,
        ),
        id="content-length-bare-lf",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            head(200, "OK", CHUNKED),
            b"hello world",
            reusable=True,
        ),
        id="chunked",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"
            b'5;name=value\r\nhello\r\nA ; q="x;y"\r\n0123456789\r\n1f\r\n'
            + b"z" * 31
            + b"\r\n0;last\r\nTrailer-A: 1\r\nTrailer-B:\r\n\r\n",
            head(200, "OK", {"transfer-encoding": "Chunked"}),
            b"hello0123456789" + b"z" * 31,
            reusable=True,
        ),
        id="chunked-extensions-trailers",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5\nhello\n2\r\n\r\n\n0\n\n",
            head(200, "OK", CHUNKED),
            b"hello\r\n",
            reusable=True,
        ),
        id="chunked-bare-lf",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0000000000000003\r\nabc\r\n0\r\n\r\n",
            head(200, "OK", CHUNKED),
            b"abc",
            reusable=True,
        ),
        id="chunk-size-16-hex-digits",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nup 1\n",
            head(200, "OK", {"content-type": "text/plain"}),
            b"up 1\n",
            reusable=False,
            eof=True,
        ),
        id="until-close",
    ),
    pytest.param(
        Valid(b"HTTP/1.1 200 OK\r\n\r\n", head(200, "OK", {}), b"", reusable=False, eof=True),
        id="until-close-empty",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
            head(204, "No Content", {"x-a": "1"}),
            b"",
            reusable=True,
        ),
        id="204",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
            head(304, "Not Modified", {"content-length": "100"}),
            b"",
            reusable=True,
        ),
        id="304-with-content-length",
    ),
    pytest.param(
        # RFC 9112 6.3 (1): a 204 ends with its head whatever its header fields say.
        Valid(
            b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
            head(204, "No Content", CHUNKED),
            b"",
            reusable=True,
        ),
        id="204-with-transfer-encoding",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            head(200, "OK", {"content-length": "2"}, minor=0),
            b"ok",
            reusable=False,
        ),
        id="http10",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok",
            head(200, "OK", {"connection": "Keep-Alive", "content-length": "2"}, minor=0),
            b"ok",
            reusable=True,
        ),
        id="http10-keep-alive",
    ),
    pytest.param(
        # RFC 9112 9.3: "close" wins, whatever the version.
        Valid(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nok",
            head(200, "OK", {"connection": "keep-alive, close", "content-length": "2"}, minor=0),
            b"ok",
            reusable=False,
        ),
        id="http10-keep-alive-and-close",
    ),
    pytest.param(
        # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing: close afterwards.
        Valid(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\n\r\n",
            head(200, "OK", {"connection": "keep-alive", **CHUNKED}, minor=0),
            b"ok",
            reusable=False,
        ),
        id="http10-chunked",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nabc",
            head(200, "OK", {"connection": "keep-alive"}, minor=0),
            b"abc",
            reusable=False,
            eof=True,
        ),
        id="http10-until-close",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            head(200, "OK", {"connection": "close", "content-length": "2"}),
            b"ok",
            reusable=False,
        ),
        id="connection-close",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: TE, Close\r\n"
            b"Content-Length: 2\r\n\r\nok",
            head(200, "OK", {"connection": "keep-alive, TE, Close", "content-length": "2"}),
            b"ok",
            reusable=False,
        ),
        id="connection-close-in-a-list",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            head(200, "OK", {"content-length": "2"}),
            b"ok",
            reusable=True,
        ),
        id="interim-100-and-103",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 200 OK\r\nCache-Control: no-cache\r\nX-A: 1\r\ncache-control: no-store\r\n"
            b"X-A: 2\r\nContent-Length: 0\r\n\r\n",
            head(
                200,
                "OK",
                {"cache-control": "no-cache, no-store", "x-a": "1, 2", "content-length": "0"},
            ),
            b"",
            reusable=True,
        ),
        id="repeated-headers-joined",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            head(200, "OK", {"content-length": "3, 3"}),
            b"abc",
            reusable=True,
        ),
        id="repeated-identical-content-length",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3 , 3\r\n\r\nabc",
            head(200, "OK", {"content-length": "3 , 3"}),
            b"abc",
            reusable=True,
        ),
        id="identical-content-length-list",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 200\r\nX-Spaced:  \t a b \t\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n",
            head(200, "", {"x-spaced": "a b", "x-empty": "", "content-length": "0"}),
            b"",
            reusable=True,
        ),
        id="no-reason-and-value-whitespace",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 404 Not  Found\there \xe9\r\nContent-Length: 0\r\n\r\n",
            head(404, "Not  Found\there \xe9", {"content-length": "0"}),
            b"",
            reusable=True,
        ),
        id="reason-with-tab-and-latin1",
    ),
    pytest.param(
        Valid(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            head(200, "OK", {"content-length": "100", **CHUNKED}),
            b"abc",
            reusable=False,
        ),
        id="chunked-wins-over-content-length",
    ),
]


def check(outcome: Outcome, case: Valid) -> None:
    assert outcome.head == case.head
    assert outcome.body == case.body
    assert outcome.done
    assert outcome.done_before_eof is not case.eof
    assert outcome.reusable is case.reusable


@pytest.mark.parametrize("case", VALID)
def test_fed_whole(case: Valid) -> None:
    check(run([case.raw], eof=case.eof), case)


@pytest.mark.parametrize("case", VALID)
def test_fed_byte_by_byte(case: Valid) -> None:
    check(run(byte_by_byte(case.raw), eof=case.eof), case)


@pytest.mark.parametrize("case", VALID)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_fed_in_random_pieces(case: Valid, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(case.raw)), max_size=12))
    check(run(split_at(case.raw, cuts), eof=case.eof), case)


def framed(row: object) -> bool:
    """Whether a ``pytest.param`` row of VALID ends without the end of the connection."""
    values: tuple[object, ...] = getattr(row, "values", ())
    return isinstance(values[0], Valid) and not values[0].eof


@pytest.mark.parametrize("case", [row for row in VALID if framed(row)])
def test_eof_after_the_end_changes_nothing(case: Valid) -> None:
    parser = ResponseParser()
    parser.feed(case.raw)
    parser.feed(b"")
    parser.feed_eof()
    assert parser.done
    assert parser.reusable is case.reusable
    assert b"".join(parser.take_body()) == case.body


def test_head_waits_for_the_blank_line() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
    assert parser.head is None
    assert parser.started
    parser.feed(b"\r\n")
    assert parser.head == head(200, "OK", {"content-length": "2"})
    assert not parser.done
    parser.feed(b"o")
    assert parser.take_body() == [b"o"]
    assert parser.take_body() == []
    parser.feed(b"k")
    assert parser.done
    assert parser.take_body() == [b"k"]


def test_nothing_fed_is_not_started() -> None:
    parser = ResponseParser()
    parser.feed(b"")
    assert not parser.started
    assert parser.head is None
    assert not parser.done


# -- the limits, exactly at the edge ----------------------------------------------------------


HEAD_START = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: "


def head_of_size(size: int) -> bytes:
    """A complete head (Content-Length 0) of ``size`` bytes as the limit counts them: the bytes
    before the ``\\n\\r\\n`` that ends it."""
    return HEAD_START + b"a" * (size - 1 - len(HEAD_START)) + b"\r\n\r\n"


def chunk_line_of_size(size: int) -> bytes:
    """A chunked response whose first chunk-size line is ``size`` bytes before its CRLF."""
    line = b"3;" + b"x" * (size - 2)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + line + b"\r\nabc\r\n0\r\n\r\n"


def near_the_end_of(data: bytes, end: int) -> list[list[bytes]]:
    """``data`` split in two at each of the few positions around ``end``, and whole."""
    return [[data]] + [split_at(data, [cut]) for cut in range(end - 4, end + 2)]


def test_head_at_the_limit_is_accepted_however_split() -> None:
    data = head_of_size(MAX_HEAD_BYTES)
    assert data.find(b"\n\r\n") == MAX_HEAD_BYTES
    for pieces in near_the_end_of(data, len(data)):
        outcome = run(pieces, eof=False)
        assert outcome.head is not None
        assert len(outcome.head.headers["x-pad"]) == MAX_HEAD_BYTES - 1 - len(HEAD_START)
        assert outcome.done
        assert outcome.reusable


def test_head_over_the_limit_is_refused_however_split() -> None:
    data = head_of_size(MAX_HEAD_BYTES + 1)
    for pieces in near_the_end_of(data, len(data)):
        with pytest.raises(ProtocolViolation) as caught:
            run(pieces, eof=False)
        assert str(caught.value) == f"response head larger than {MAX_HEAD_BYTES} bytes"


def test_chunk_line_at_the_limit_is_accepted_however_split() -> None:
    data = chunk_line_of_size(MAX_CHUNK_LINE)
    end = data.index(b"\r\nabc")
    for pieces in near_the_end_of(data, end + 2):
        outcome = run(pieces, eof=False)
        assert outcome.body == b"abc"
        assert outcome.reusable


def test_chunk_line_over_the_limit_is_refused_however_split() -> None:
    data = chunk_line_of_size(MAX_CHUNK_LINE + 1)
    end = data.index(b"\r\nabc")
    for pieces in near_the_end_of(data, end + 2):
        with pytest.raises(ProtocolViolation) as caught:
            run(pieces, eof=False)
        assert str(caught.value) == "chunked framing line too long"


def test_header_lines_at_the_limit() -> None:
    lines = b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(MAX_HEADER_LINES - 1))
    data = b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 0\r\n\r\n"
    outcome = run([data], eof=False)
    assert outcome.head is not None
    assert len(outcome.head.headers) == MAX_HEADER_LINES
    assert outcome.head.headers["x-198"] == "198"


# -- violations ----------------------------------------------------------------------------------

OK_HEAD = b"HTTP/1.1 200 OK\r\n"
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
BIG_HEADER = b"X-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n"
MANY_HEADERS = b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(MAX_HEADER_LINES + 1))
LONG_CHUNK_LINE = b"1;" + b"x" * 5000

INVALID = [
    pytest.param(
        b"SPDY/9 200 OK\r\n\r\n", "invalid status line b'SPDY/9 200 OK'", id="status-spdy"
    ),
    pytest.param(b"HTTP/2 200\r\n\r\n", "invalid status line b'HTTP/2 200'", id="status-http2"),
    pytest.param(b"HTTP/1.2 200 OK\n\n", "invalid status line b'HTTP/1.2 200 OK'", id="status-1.2"),
    pytest.param(b"http/1.1 200 OK\r\n\r\n", "invalid status line b'http/1.1 200 OK'", id="lower"),
    pytest.param(b"HTTP/1.1 20 OK\r\n\r\n", "invalid status line b'HTTP/1.1 20 OK'", id="2-digits"),
    pytest.param(b"HTTP/1.1 200OK\r\n\r\n", "invalid status line b'HTTP/1.1 200OK'", id="no-space"),
    pytest.param(
        b"HTTP/1.1 200 O\x00K\r\n\r\n", "invalid status line b'HTTP/1.1 200 O\\x00K'", id="nul"
    ),
    pytest.param(b"\r\n\r\n", "invalid status line b''", id="empty-status-line"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\n" + b"a" * 100 + b"\r\n\r\n",
        "invalid header line b'" + "a" * 80 + "'...",
        id="long-bad-line-is-cut",
    ),
    pytest.param(OK_HEAD + b"NoColon\r\n\r\n", "invalid header line b'NoColon'", id="no-colon"),
    pytest.param(OK_HEAD + b"Name : v\r\n\r\n", "invalid header line b'Name : v'", id="space-name"),
    pytest.param(OK_HEAD + b": v\r\n\r\n", "invalid header line b': v'", id="empty-name"),
    pytest.param(OK_HEAD + b"N(a): v\r\n\r\n", "invalid header line b'N(a): v'", id="name-char"),
    pytest.param(
        OK_HEAD + b"X-A: 1\r\n  folded\r\n\r\n", "invalid header line b'  folded'", id="obs-fold"
    ),
    pytest.param(
        OK_HEAD + b"X-A: 1\r\n\tX-B: 2\r\n\r\n",
        "invalid header line b'\\tX-B: 2'",
        id="obs-fold-tab",
    ),
    pytest.param(
        OK_HEAD + b"X-A: a\x00b\r\n\r\n", "invalid header line b'X-A: a\\x00b'", id="value-nul"
    ),
    pytest.param(
        OK_HEAD + b"X-A: a\rb\r\n\r\n", "invalid header line b'X-A: a\\rb'", id="value-bare-cr"
    ),
    pytest.param(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        "unexpected 101 Switching Protocols",
        id="101",
    ),
    pytest.param(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n",
        "unexpected 101 Switching Protocols",
        id="101-after-100",
    ),
    pytest.param(
        OK_HEAD + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "conflicting Content-Length '3, 4'",
        id="content-length-conflicting",
    ),
    pytest.param(
        OK_HEAD + b"Content-Length: 3,,3\r\n\r\nabc",
        "conflicting Content-Length '3,,3'",
        id="content-length-empty-member",
    ),
    pytest.param(
        OK_HEAD + b"Content-Length: x\r\n\r\n", "invalid Content-Length 'x'", id="content-length-x"
    ),
    pytest.param(
        OK_HEAD + b"Content-Length: -1\r\n\r\n", "invalid Content-Length '-1'", id="negative"
    ),
    pytest.param(OK_HEAD + b"Content-Length: +3\r\n\r\nabc", "invalid Content-Length '+3'", id="+"),
    pytest.param(OK_HEAD + b"Content-Length:\r\n\r\n", "invalid Content-Length ''", id="empty"),
    pytest.param(
        OK_HEAD + b"Content-Length: 0x10\r\n\r\n", "invalid Content-Length '0x10'", id="hex"
    ),
    pytest.param(
        OK_HEAD + b"Content-Length: \xb2\r\n\r\n",  # latin-1 SUPERSCRIPT TWO: isdigit() is True
        "invalid Content-Length '\xb2'",
        id="content-length-non-ascii-digit",
    ),
    pytest.param(
        OK_HEAD + b"Content-Length: 1234567890123456789\r\n\r\n",
        "invalid Content-Length '1234567890123456789'",
        id="content-length-19-digits",
    ),
    pytest.param(
        OK_HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n",
        "unsupported Transfer-Encoding 'gzip, chunked'",
        id="te-gzip",
    ),
    pytest.param(
        OK_HEAD + b"Transfer-Encoding: identity\r\n\r\n",
        "unsupported Transfer-Encoding 'identity'",
        id="te-identity",
    ),
    pytest.param(
        OK_HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "unsupported Transfer-Encoding 'chunked, chunked'",
        id="te-chunked-twice",
    ),
    pytest.param(CHUNKED_HEAD + b"zz\r\n", "invalid chunk size b'zz'", id="chunk-size-not-hex"),
    pytest.param(CHUNKED_HEAD + b"\r\n", "invalid chunk size b''", id="chunk-size-empty"),
    pytest.param(CHUNKED_HEAD + b"0x5\r\n", "invalid chunk size b'0x5'", id="chunk-size-0x"),
    pytest.param(CHUNKED_HEAD + b"-1\r\n", "invalid chunk size b'-1'", id="chunk-size-negative"),
    pytest.param(
        CHUNKED_HEAD + b"1" * 17 + b"\r\n",
        "invalid chunk size b'11111111111111111'",
        id="chunk-size-17-digits",
    ),
    pytest.param(
        CHUNKED_HEAD + b"3\r\nhello\r\n0\r\n\r\n",
        "chunk data longer than its size",
        id="chunk-data-too-long",
    ),
    pytest.param(
        CHUNKED_HEAD + b"3\r\nabc0\r\n\r\n",
        "chunk data longer than its size",
        id="chunk-data-without-crlf",
    ),
    pytest.param(
        CHUNKED_HEAD + b"0\r\nno colon\r\n\r\n",
        "invalid trailer line b'no colon'",
        id="bad-trailer-line",
    ),
    pytest.param(
        OK_HEAD + BIG_HEADER,
        f"response head larger than {MAX_HEAD_BYTES} bytes",
        id="head-too-large-unfinished",
    ),
    pytest.param(
        OK_HEAD + BIG_HEADER + b"\r\n",
        f"response head larger than {MAX_HEAD_BYTES} bytes",
        id="head-too-large-complete",
    ),
    pytest.param(
        OK_HEAD + MANY_HEADERS + b"\r\n",
        f"more than {MAX_HEADER_LINES} header lines",
        id="too-many-header-lines",
    ),
    pytest.param(
        CHUNKED_HEAD + LONG_CHUNK_LINE + b"\r\nx\r\n0\r\n\r\n",
        "chunked framing line too long",
        id="chunk-line-too-long",
    ),
    pytest.param(
        CHUNKED_HEAD + LONG_CHUNK_LINE,
        "chunked framing line too long",
        id="chunk-line-too-long-unfinished",
    ),
    pytest.param(
        CHUNKED_HEAD + b"0\r\nX-T: " + b"t" * 5000 + b"\r\n\r\n",
        "chunked framing line too long",
        id="trailer-line-too-long",
    ),
]

# Cut by the end of the connection: (bytes, message).
CUT = [
    pytest.param(b"", "connection closed before a response", id="eof-before-any-byte"),
    pytest.param(
        b"HTTP/1.1 100 Continue\r\n\r\n",
        "connection closed before a response",
        id="eof-after-interim",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-",
        "connection closed in the middle of the response head",
        id="eof-mid-head",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        "connection closed before the end of the body",
        id="eof-mid-body-length",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
        "connection closed before the end of the body",
        id="eof-before-body-length",
    ),
    pytest.param(
        CHUNKED_HEAD + b"5\r\nhel",
        "connection closed before the end of the body",
        id="eof-mid-chunk",
    ),
    pytest.param(
        CHUNKED_HEAD + b"5\r\nhello\r\n",
        "connection closed before the end of the body",
        id="eof-between-chunks",
    ),
    pytest.param(
        CHUNKED_HEAD + b"0\r\nX-T: 1\r\n",
        "connection closed before the end of the body",
        id="eof-in-trailers",
    ),
]


def pieces_for(data: bytes) -> list[bytes]:
    """Byte by byte for small inputs; 1000-byte pieces for the limit rows (O(n^2) otherwise)."""
    size = 1 if len(data) < 8192 else 1000
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize(("raw", "message"), INVALID)
def test_violation_fed_whole(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolViolation) as caught:
        run([raw], eof=False)
    assert str(caught.value) == message


@pytest.mark.parametrize(("raw", "message"), INVALID)
def test_violation_fed_in_pieces(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolViolation) as caught:
        run(pieces_for(raw), eof=False)
    assert str(caught.value) == message


@pytest.mark.parametrize(("raw", "message"), INVALID + CUT)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_violation_fed_in_random_pieces(raw: bytes, message: str, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    with pytest.raises(ProtocolViolation) as caught:
        # The cut rows end with EOF; the others raise before it.
        run(split_at(raw, cuts), eof=True)
    assert str(caught.value) == message


@pytest.mark.parametrize(("raw", "message"), CUT)
def test_eof_cuts_the_message(raw: bytes, message: str) -> None:
    for pieces in ([raw], byte_by_byte(raw)):
        parser = ResponseParser()
        for piece in pieces:
            parser.feed(piece)
        assert not parser.done
        with pytest.raises(ProtocolViolation) as caught:
            parser.feed_eof()
        assert str(caught.value) == message


# -- reuse after the end -------------------------------------------------------------------------

EXTRA = [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", id="content-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"", id="content-length-0"),
    pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", b"", id="204"),
    pytest.param(CHUNKED_HEAD + b"2\r\nok\r\n0\r\n\r\n", b"ok", id="chunked"),
    pytest.param(CHUNKED_HEAD + b"2\r\nok\r\n0\r\nX-T: 1\r\n\r\n", b"ok", id="chunked-trailer"),
]


@pytest.mark.parametrize(("response", "body"), EXTRA)
@pytest.mark.parametrize("later", [False, True], ids=["same-piece", "later-piece"])
def test_bytes_after_the_response_make_it_not_reusable(
    response: bytes, body: bytes, later: bool
) -> None:
    clean = run([response], eof=False)
    assert clean.done
    assert clean.reusable
    stray = b"HTTP/1.1 200 OK\r\n"
    pieces = [response, stray] if later else [response + stray]
    outcome = run(pieces, eof=False)
    assert outcome.done
    assert outcome.body == body  # the stray bytes are not body
    assert not outcome.reusable


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"
            b"2\r\nok\r\n0\r\n\r\n",
            id="te-first",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            id="cl-first-keep-alive",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\n\r\n",
            id="cl-matching-the-wire",
        ),
    ],
)
def test_transfer_encoding_with_content_length_is_never_reusable(raw: bytes) -> None:
    for pieces in ([raw], byte_by_byte(raw)):
        outcome = run(pieces, eof=False)
        assert outcome.body == b"ok"
        assert outcome.done
        assert not outcome.reusable


# -- the request -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "headers", "expected"),
    [
        pytest.param(
            "/metrics?name=a%20b",
            [("Host", "tgi.invalid:8080"), ("Accept", "text/plain"), ("X-Empty", "")],
            b"GET /metrics?name=a%20b HTTP/1.1\r\nHost: tgi.invalid:8080\r\n"
            b"Accept: text/plain\r\nX-Empty: \r\n\r\n",
            id="with-headers",
        ),
        pytest.param("/", [], b"GET / HTTP/1.1\r\n\r\n", id="no-headers"),
    ],
)
def test_request_bytes(target: str, headers: list[tuple[str, str]], expected: bytes) -> None:
    assert request(target, headers) == expected
