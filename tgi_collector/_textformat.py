"""The syntax of single lines of the Prometheus text format, read the careful way.

The parser's fast path (:mod:`tgi_collector.exposition`) handles the usual line with a split
and a cache lookup; everything else comes here: escapes, quoted names, blanks inside braces,
timestamps and exemplars, HELP and TYPE lines. The rules follow what prometheus_client 0.26
accepts (see the exposition module's docstring for the differences). Each function raises
:class:`Malformed` on bad input; the parse loop adds the line number.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

from tgi_collector.metrics import Labels, MetricType

__all__ = [
    "MAX_LABEL_TERMS",
    "Malformed",
    "is_plain",
    "parse_meta",
    "parse_number",
    "parse_series",
    "quoted",
    "value_and_timestamp",
]

_NAME_PATTERN: Final = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_NAME: Final = re.compile(_NAME_PATTERN)
# prometheus_client's check of unquoted names, after unescaping: "$" lets one "\n" end them.
_PC_NAME: Final = re.compile(rf"^{_NAME_PATTERN}$")
_RESERVED: Final = re.compile(r"__.*$")  # prometheus_client's reserved label names
_ESCAPE: Final = re.compile(r'\\[\\n"]')
_HELP_ESCAPE: Final = re.compile(r"\\[\\n]")
_UNESCAPED: Final = {"\\\\": "\\", "\\n": "\n", '\\"': '"'}
_WS: Final = " \t\n\r\x0b\x0c"  # string.whitespace: token separators of HELP/TYPE lines
_BLANK: Final = re.compile(f"[{re.escape(_WS)}]")
_TYPES: Final = {
    **{t.value: t for t in MetricType},
    **dict.fromkeys(("unknown", "info", "stateset", "gaugehistogram"), MetricType.UNTYPED),
}


# Prometheus sets no limit by default; real series have a handful of labels.
MAX_LABEL_TERMS: Final = 1_000


class Malformed(Exception):
    """A malformed line; the parse loop adds the line number."""


def quoted(text: str, limit: int = 80) -> str:
    """``repr`` of ``text`` for an error message, cut to ``limit`` characters.

    Messages travel in every down snapshot of a target: a hostile target must not be able to
    make them as large as its body by repeating a bad token.
    """
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


def parse_number(token: str) -> float | None:
    """A value as prometheus_client reads it: ``float()``, but no ``_`` digit separators."""
    if "_" in token:
        return None
    try:
        return float(token)
    except ValueError:
        return None


def is_plain(labels: Labels) -> bool:
    """Whether fast-path labels need no careful look (no duplicate or reserved names)."""
    if len(labels) == 1:
        return labels[0][0][:2] != "__"
    names = {label for label, _ in labels}
    return len(names) == len(labels) and not any(label[:2] == "__" for label in names)


def _escaped(text: str, index: int, floor: int = 0) -> bool:
    """Whether ``text[index]`` follows an odd number of backslashes (none before ``floor``)."""
    start = index
    while start > floor and text[start - 1] == "\\":
        start -= 1
    return (index - start) % 2 == 1


# The characters _find_unquoted stops at, by the set of separators asked for.
_STOPS: dict[str, re.Pattern[str]] = {}


def _find_unquoted(text: str, chars: str, start: int = 0) -> int:
    """Index of the first of ``chars`` outside double quotes in ``text[start:]``, or -1.

    ``text[start:]`` is read as if it were the whole string: quoting starts closed there and
    a backslash before ``start`` escapes nothing. The jumps between quotes and separators are
    searches in C, so a long label value costs little more than a copy of it.
    """
    stops = _STOPS.get(chars)
    if stops is None:
        stops = _STOPS.setdefault(chars, re.compile('["' + re.escape(chars) + "]"))
    index = start
    while (match := stops.search(text, index)) is not None:
        found = match.start()
        if text[found] != '"':
            return found
        index = found + 1
        if _escaped(text, found, start):
            continue  # an escaped quote outside a string is plain text
        close = text.find('"', index)
        while close >= 0 and _escaped(text, close, start):
            close = text.find('"', close + 1)
        if close < 0:
            return -1
        index = close + 1
    return -1


def _closing_quote(text: str) -> int:
    """Index of the unescaped quote closing ``text[0] == '"'``, or -1."""
    index = text.find('"', 1)
    while index > 0 and _escaped(text, index):
        index = text.find('"', index + 1)
    return index


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda m: _UNESCAPED[m.group(0)], text) if "\\" in text else text


def _unquote_name(term: str) -> str:
    """A metric or label name token as prometheus_client reads it: stripped, then unquoted
    and unescaped; an unquoted one must be a valid name."""
    term = term.strip()
    if term[:1] == '"':
        if len(term) < 2 or term[-1] != '"':
            raise Malformed(f"missing closing quote in name {quoted(term)}")
        return _unescape(term[1:-1])
    term = _unescape(term)
    if not _PC_NAME.match(term):
        raise Malformed(f"invalid name {quoted(term)}")
    return term


def _skip_space(text: str, index: int) -> int:
    """The first index at or after ``index`` that is not whitespace (``str.strip``'s kind)."""
    end = len(text)
    while index < end and text[index].isspace():
        index += 1
    return index


def _parse_labels(body: str) -> dict[str, str]:
    """The inside of ``{...}``, term by term as prometheus_client splits it.

    prometheus_client cuts the rest of the set off after each term; here an index walks the
    set instead, so the cost is its length, not its terms times its length.
    """
    labels: dict[str, str] = {}
    body = body.strip()
    end = len(body)
    at = 0
    terms = 0
    while at < end:
        terms += 1
        if terms > MAX_LABEL_TERMS:
            # Each term costs a Python-level step: a line of a million empty terms
            # ("a{,=,=,=...}") is refused rather than walked.
            raise Malformed(f"more than {MAX_LABEL_TERMS} terms in a label set")
        if body[at] == ",":
            at += 1
            if at < end and body[at] == ",":
                raise Malformed("two commas in a row in label set")
        split = _find_unquoted(body, "=,}", at)
        if split >= 0 and body[split] == "=":
            name_term, at = body[at:split], split + 1
            split = _find_unquoted(body, ",}", at)
        else:
            name_term = '"__name__"'  # a bare (quoted) term is the metric name
        if split < 0:
            split = end
        term, at = body[at:split].strip(), _skip_space(body, split)
        if not term:
            continue
        name = _unquote_name(name_term)
        if term[0] != '"' or _closing_quote(term) != len(term) - 1:
            raise Malformed(f"label value of {quoted(name)} is not one quoted string")
        if name == "__name__" and len(term) == 2:
            raise Malformed("empty metric name")
        if name != "__name__" and _RESERVED.match(name):
            raise Malformed(f"reserved label name {quoted(name)}")
        if name in labels:
            raise Malformed(f"duplicate label name {quoted(name)}")
        labels[name] = _unescape(term[1:-1])
    return labels


def parse_series(text: str) -> tuple[str, Labels, str]:
    """Split a stripped sample line into name, labels and the text after them."""
    brace = _find_unquoted(text, "{")
    if brace < 0 or " # " in text[:brace]:
        match = _NAME.match(text)
        end = match.end() if match else 0
        if not end or (end < len(text) and not text[end].isspace()):
            raise Malformed("invalid metric name")
        return text[:end], (), text[end:]
    close = _find_unquoted(text, "}", brace)
    if close < 0:
        raise Malformed("label set without closing brace")
    labels = _parse_labels(text[brace + 1 : close])
    name = text[:brace].strip()
    if "__name__" in labels:
        if name:
            raise Malformed("metric name given twice")
        name = labels.pop("__name__")
    elif not name:
        raise Malformed("missing metric name")
    return name, tuple(labels.items()), text[close + 1 :]


def _timestamp(token: str) -> int | None:
    if "_" not in token:
        try:
            return int(token)
        except ValueError:
            pass
    value = parse_number(token)
    if value is None:
        raise Malformed(f"invalid timestamp {quoted(token)}")
    return int(value) if math.isfinite(value) else None


def value_and_timestamp(rest: str) -> tuple[float, int | None, int]:
    """Value, timestamp and token count of the text after the series."""
    tokens = rest.split()
    if not tokens:
        raise Malformed("missing value")
    value = parse_number(tokens[0])
    if value is None:
        raise Malformed(f"invalid value {quoted(tokens[0])}")
    count = len(tokens)
    for index in range(1, count - 1):
        if tokens[index] == "#" and tokens[index + 1][0] == "{":  # an OpenMetrics exemplar
            try:
                return value, _timestamp(tokens[index - 1]) if index > 1 else None, count
            except Malformed:  # prometheus_client reads the last token; be as lenient
                return value, None, count
    return value, _timestamp(tokens[-1]) if count > 1 else None, count


def parse_meta(text: str) -> tuple[bool, str, Any] | None:
    """``(is_type, name, type or help)`` of a HELP/TYPE line, None for other comments."""
    if text[1:2] not in _WS or len(text) < 2:  # "#HELP" is a comment for prometheus_client
        return None
    body = text[1:].lstrip(_WS)
    keyword = body[:4]
    if keyword not in ("HELP", "TYPE") or body[4:5] not in _WS:
        return None
    body = body[4:].lstrip(_WS)
    if not body:
        if keyword == "TYPE":
            raise Malformed("TYPE line without a metric name")
        return None
    blank = _BLANK.search(body)
    end = blank.start() if blank else len(body)
    if '"' in body[:end]:  # a quoted name may hold blanks
        end = _find_unquoted(body, _WS)
        end = len(body) if end < 0 else end
    name, rest = _unquote_name(body[:end]), body[end:]
    if not name:  # prometheus_client ignores a quoted empty name, type and all
        return None
    rest = rest.lstrip(_WS)
    if keyword == "HELP":
        return False, name, _HELP_ESCAPE.sub(lambda m: _UNESCAPED[m.group(0)], rest)
    return True, name, _TYPES.get(rest, rest)  # an unknown type stays a str, see _Family
