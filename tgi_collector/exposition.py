"""A fast parser for the Prometheus text exposition format 0.0.4.

``parse(text)`` turns a ``/metrics`` body into :class:`~tgi_collector.metrics.Exposition`.
:class:`Parser` does the same with a per-target cache, as Prometheus does: the series text of a
line (everything before the value) maps to its parsed identity, so a series seen in an earlier
scrape costs a dict lookup and a ``float()``, or nothing when its value is unchanged.

Every input that ``prometheus_client.parser.text_string_to_metric_families`` (0.26) accepts is
accepted, with the same samples (name, labels, value, NaN and +/-Inf kept), except a sample
line without any blank (prometheus_client reads ``nan`` as a sample ``na`` = NaN), and up to
these normalisations:

* Sample names stay as on the wire. prometheus_client renames the samples of a counter ``x``
  to ``x_total`` and strips ``_total`` from counter family names.
* Families. A HELP or TYPE line opens the family it names (again, if seen before). A sample
  joins the open family if its name is one of the family's: ``F`` for counter, gauge and
  untyped; ``F_bucket``, ``F_count``, ``F_sum`` for histogram; ``F``, ``F_count``, ``F_sum``
  for summary. OpenMetrics' ``F_total`` and ``F_created`` are not (in 0.0.4 the TYPE line
  names the sample itself), as in prometheus_client and Prometheus. Any other sample closes
  the open family and joins the family named like the sample, untyped if new: one family per
  name, where prometheus_client makes one family per such sample. A name that comes back
  after other families (the spec forbids it) continues its family, as in Prometheus. The last
  TYPE and the last HELP of a family win. Types ``unknown``, ``info``, ``stateset`` and
  ``gaugehistogram`` are ``UNTYPED``; any other type is an error unless a later TYPE line
  mends it (prometheus_client checks a type only once the family is complete).
* HELP/TYPE lines are ``#``, blanks, then the keyword, the form both prometheus_client and
  Prometheus read as such: ``#HELP a b`` and ``#x HELP a b`` are plain comments (the first
  is a HELP line for Prometheus, the second for prometheus_client). HELP text unescapes
  ``\\\\`` and ``\\n``; label values also ``\\"``; other backslashes stay, as in
  prometheus_client.
* Values are what ``float()`` takes, without ``_`` (``1e3``, ``+Inf``, ``NaN``, ``inf``; no
  hex). Timestamps are integer milliseconds: a fractional one is truncated, a non-finite one
  dropped. After the value, an OpenMetrics exemplar (``# {...} v [ts]``) is ignored, and of
  several other tokens the last is the timestamp, as prometheus_client reads them.
* Accepted like in prometheus_client: quoted names (``{"a.b"}``), ``{__name__="a"}``, an empty
  label term (``a{x=} 1`` drops ``x``), leading and trailing commas, blanks around ``{``, ``=``
  and ``,``, and any text before ``{`` as the name.

Malformed input raises :class:`~tgi_collector.errors.ExpositionError` naming the 1-based line;
more than ``max_samples`` samples raise :class:`~tgi_collector.errors.SampleLimitError` once the
whole text is parsed (a malformed line wins, as in Prometheus, which parses on to count).
Nothing else is raised, whatever the input.

This module holds the parse loop and its caches; the record of one parsed sample line is in
:mod:`tgi_collector._exposition_entries`, the building of families in
:mod:`tgi_collector._exposition_families`, the careful syntax of odd lines in
:mod:`tgi_collector._textformat`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from itertools import chain
from operator import is_, methodcaller
from typing import Any, Final

from tgi_collector._exposition_entries import (
    LE,
    NO_SAMPLE,
    BucketTwin,
    Entry,
    QuantileTwin,
    SampleTwin,
    guess_group,
    make_entry,
    new,
)
from tgi_collector._exposition_families import Family, build
from tgi_collector._textformat import (
    Malformed,
    is_plain,
    parse_meta,
    parse_number,
    parse_series,
    quoted,
    value_and_timestamp,
)
from tgi_collector.errors import ExpositionError, SampleLimitError
from tgi_collector.metrics import Bucket, Exposition, Labels, MetricFamily, Quantile, Sample

__all__ = ["Parser", "parse"]

_NAME_PATTERN: Final = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_NAME: Final = re.compile(_NAME_PATTERN)
_LABEL_PAIR: Final = re.compile(rf'({_NAME_PATTERN})="([^"\\]*)"')
_PAIR: Final = rf'{_NAME_PATTERN}="[^"\\]*"'
# The usual series text, name{a="x",b="y"} without escapes or blanks: the fast path.
_SIMPLE_SERIES: Final = re.compile(rf"({_NAME_PATTERN})(?:\{{((?:{_PAIR}(?:,{_PAIR})*,?)?)\}})?")
_UNSEEN: Final = (False, "", None)  # a HELP/TYPE line not in the meta cache


# Lines are split a slice of the text at a time: a body of millions of short lines must not
# become a list of millions of strings at once.
_SLICE_CHARS: Final = 1 << 16


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` (split on ``\\n``, as ``text.split("\\n")``), lazily by slices."""
    if len(text) <= _SLICE_CHARS:
        return iter(text.split("\n"))
    # map, not a generator expression, so that no variable keeps a split piece alive.
    return chain.from_iterable(map(methodcaller("split", "\n"), _pieces(text)))


def _pieces(text: str) -> Iterator[str]:
    """``text`` cut at newlines (which are dropped) into pieces of about ``_SLICE_CHARS``."""
    start = 0
    while True:
        cut = text.find("\n", start + _SLICE_CHARS)
        if cut < 0:
            yield text[start:]
            return
        yield text[start:cut]
        start = cut + 1


class Parser:
    """A text-format parser for one target, with a bounded cache of the series it has seen.

    Reuse one Parser for every scrape of the same target (not from two threads at once). The
    cache holds at most ``cache_size`` series and is emptied when full; with 0 it is emptied
    after every parse.
    """

    def __init__(self, *, cache_size: int = 50_000) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, not {cache_size}")
        self._cache_size = cache_size
        self._cache: dict[str, Entry] = {}
        self._meta: dict[str, tuple[bool, str, Any] | None] = {}
        self._keys: dict[Labels, Labels] = {}
        self._numbers: dict[str, float] = {}  # value text -> value: values repeat a lot
        # The last result, its text, and each of its families with the entries it was built
        # from: an unchanged text or family comes back as the very same object, which lets
        # callers (views, windows, encoders) skip unchanged work by identity.
        self._last: tuple[str, Exposition, int] | None = None
        self._caching = True  # False once a parse is over its sample limit
        self._built: dict[str, tuple[Family, MetricFamily]] = {}

    def parse(self, text: str, *, max_samples: int | None = None) -> Exposition:
        """Parse one exposition; raises ExpositionError or SampleLimitError only.

        Text equal to the previous call's gives the previous result (the same object); a
        family whose lines are all unchanged gives the previous :class:`MetricFamily` object.
        """
        last = self._last
        if last is not None and last[0] == text:
            if max_samples is not None and max_samples < last[2]:
                raise SampleLimitError(max_samples)
            return last[1]
        exposition, sample_count = self._parse(text, max_samples)
        self._last = (text, exposition, sample_count) if self._cache_size else None
        return exposition

    def _parse(self, text: str, max_samples: int | None) -> tuple[Exposition, int]:
        cache, numbers = self._cache, self._numbers
        get = cache.get
        families: dict[str, Family] = {}
        entries: list[Entry] = []
        allowed: frozenset[str] = frozenset()
        lineno, line = 0, ""
        count, limit = 0, max_samples if max_samples is not None else sys.maxsize
        self._caching = True
        try:
            for lineno, line in enumerate(_lines(text), 1):
                key, _, vtext = line.rpartition(" ")
                entry = get(key)
                if entry is None:
                    entry = self._identify(line, key, vtext)
                    if entry is None:  # a blank line or a comment
                        family = self._metadata(line, lineno, families)
                        if family is not None:
                            entries, allowed = family.entries, family.allowed
                        continue
                if entry[2] != vtext:  # a new series or a new value
                    value = numbers.get(vtext)
                    if value is None:
                        value = self._number(vtext)
                    if value is None:  # not a plain number: the careful path says what
                        entry = self._careful(line.strip(), "", vtext)
                    elif count >= limit:  # over the limit: checked, nothing built (see below)
                        pass
                    else:  # make_entry and item_of inlined: the hot path of a busy target
                        sample = new(SampleTwin)
                        sample.name, sample.labels = entry[0], entry[1]
                        sample.value, sample.timestamp_ms = value, None
                        sample.__class__ = Sample
                        group = entry[4]
                        if group is None or group[3] is None:
                            item = None
                        elif group[0] == LE:
                            item = new(BucketTwin)
                            item.upper_bound, item.cumulative_count = group[3], value
                            item.__class__ = Bucket
                        else:
                            item = new(QuantileTwin)
                            item.quantile, item.value = group[3], value
                            item.__class__ = Quantile
                        entry = (entry[0], entry[1], vtext, sample, group, item)
                        cache[key] = entry
                count += 1
                if count > limit:
                    # Parse on (a malformed line still wins, as in Prometheus) but keep
                    # nothing more, not even new series in the cache: memory stays bounded
                    # by the limit, not by the body.
                    self._caching = False
                    continue
                if entry[0] in allowed:
                    entries.append(entry)
                else:
                    family = families.get(entry[0])
                    if family is None:
                        family = families[entry[0]] = Family(entry[0])
                    entries, allowed = family.entries, frozenset((entry[0],))
                    entries.append(entry)
        except Malformed as exc:
            raise ExpositionError(str(exc), line_number=lineno, line=line) from None
        finally:
            if not self._cache_size:
                cache.clear()
                self._keys.clear()
        for family in families.values():
            if family.bad_type:
                kind, lineno, line = family.bad_type
                raise ExpositionError(
                    f"unknown metric type {quoted(kind)}", line_number=lineno, line=line
                )
        if count > limit:
            raise SampleLimitError(limit)
        return Exposition(tuple(map(self._reuse_or_build, families.values()))), count

    def _reuse_or_build(self, family: Family) -> MetricFamily:
        """The previous parse's family if nothing in it changed, else a newly built one.

        Unchanged lines give back the very same cached entry objects, so "nothing changed" is
        the same type and help and the same entries, compared by identity.
        """
        built = self._built
        previous = built.get(family.name)
        if previous is not None:
            before, result = previous
            if (
                before.type is family.type
                and before.help == family.help
                and len(before.entries) == len(family.entries)
                and all(map(is_, before.entries, family.entries))
            ):
                built[family.name] = (family, result)
                return result
        result = build(family)
        if self._cache_size:
            if len(built) >= self._cache_size:
                built.clear()
            built[family.name] = (family, result)
        return result

    def _identify(self, line: str, key: str, vtext: str) -> Entry | None:
        """Parse a line the cache could not answer; None for a blank or comment line.

        A ``series value`` line (one space before a lone value, so ``key`` is the series) is
        cached, and returned without a value yet: the parse loop adds it as for any known
        series with a new value. The common case, ``name{a="x",...} value`` without escapes
        or blanks, takes a regex; everything else the careful path.
        """
        match = _SIMPLE_SERIES.fullmatch(key)
        if match is not None and self._number(vtext) is not None:
            name = match.group(1)
            # Positions, not substrings: a line of megabytes (one huge label value) is then
            # copied once more for its value, not once per step.
            start, end = match.span(2)
            if start == end:  # no label set, or an empty one
                return self._remember(key, name, ())
            if key[end - 1] == '"' and key.find('",', start, end) < 0:  # one label, as in buckets
                equals = key.find('="', start, end)
                label = key[start:equals]
                if label[:2] != "__":
                    return self._remember(key, name, ((label, key[equals + 2 : end - 1]),))
            else:
                labels = tuple(_LABEL_PAIR.findall(key, start, end))
                if is_plain(labels):
                    return self._remember(key, name, labels)
        stripped = line.strip()
        if not stripped or stripped[0] == "#":
            return None
        return self._careful(stripped, key, vtext)

    def _careful(self, stripped: str, key: str, vtext: str) -> Entry:
        """The careful path, for a stripped sample line."""
        name, labels, rest = parse_series(stripped)
        value, ts, tokens = value_and_timestamp(rest)
        if ts is None and tokens == 1 and self._is_series(key, name, labels):
            return self._remember(key, name, labels)
        return make_entry(name, labels, vtext, value, guess_group(name, labels, self._keys), ts=ts)

    def _remember(self, key: str, name: str, labels: Labels) -> Entry:
        """Cache a series, with no value yet (``None`` never equals a value text)."""
        if self._cache_size and len(self._cache) >= self._cache_size:
            self._cache.clear()
            self._keys.clear()
        entry = (name, labels, None, NO_SAMPLE, guess_group(name, labels, self._keys), None)
        if self._caching:
            self._cache[key] = entry
        return entry

    def _number(self, vtext: str) -> float | None:
        """:func:`parse_number`, remembered."""
        value = self._numbers.get(vtext)
        if value is None:
            value = parse_number(vtext)
            if value is not None:
                if len(self._numbers) >= 4096:
                    self._numbers.clear()
                self._numbers[vtext] = value
        return value

    @staticmethod
    def _is_series(key: str, name: str, labels: Labels) -> bool:
        """Whether ``key`` alone parses to this series, so that ``key + " " + value`` always
        means it and the careful parse of such a line can be cached."""
        try:
            name2, labels2, after = parse_series(key.strip())
        except Malformed:
            return False
        return not after.strip() and (name2, labels2) == (name, labels)

    def _metadata(self, line: str, lineno: int, families: dict[str, Family]) -> Family | None:
        """The family a HELP/TYPE line opens (and updates), None for other comment lines."""
        meta = self._meta.get(line, _UNSEEN)
        if meta is _UNSEEN:
            stripped = line.strip()
            meta = parse_meta(stripped) if stripped else None
            if len(self._meta) >= 1_000:
                self._meta.clear()
            self._meta[line] = meta
        if meta is None:
            return None
        family = families.get(meta[1])
        if family is None:
            family = families[meta[1]] = Family(meta[1])
        if meta[0]:
            family.set_type(meta[2], lineno, line)
        else:
            family.help = meta[2]
        return family


def parse(text: str, *, max_samples: int | None = None) -> Exposition:
    """Parse one exposition with a throwaway :class:`Parser` (see the module docstring)."""
    return Parser().parse(text, max_samples=max_samples)
