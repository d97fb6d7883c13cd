"""The parser's record of one sample line (an entry), and the fast construction of its objects.

:mod:`tgi_collector.exposition` turns each sample line into an :data:`Entry`: the series'
name and labels, the value text it was parsed from, the :class:`~tgi_collector.metrics.Sample`,
and, for a bucket or quantile, where it groups and the :class:`~tgi_collector.metrics.Bucket`
or :class:`~tgi_collector.metrics.Quantile` it makes. Entries are what the parser caches per
series and what :mod:`tgi_collector._exposition_families` builds families from, so their shape
and construction live here, apart from both. The parse loop inlines :func:`make_entry` and
:func:`item_of` on its hot path, with the names exported here (:func:`new` and the twins).
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, Final, cast

from tgi_collector.metrics import Bucket, Labels, Quantile, Sample

__all__ = [
    "LE",
    "NO_SAMPLE",
    "QUANTILE",
    "BucketTwin",
    "Entry",
    "GroupInfo",
    "QuantileTwin",
    "SampleTwin",
    "group_info",
    "guess_group",
    "item_of",
    "make_entry",
    "new",
]

LE: Final = "le"
QUANTILE: Final = "quantile"

GroupInfo = tuple[str, Labels, Labels, float | None]  # label, labels without it, key, bound
Entry = tuple[str, Labels, str | None, Sample, GroupInfo | None, Bucket | Quantile | None]
"""name, labels, value text, sample, group info, bucket/quantile: one parsed sample line."""
NO_SAMPLE: Final = Sample("", (), math.nan)  # in a cached series not given a value yet


def _twin(cls: type) -> Any:
    """An unfrozen class with the slots of the frozen dataclass ``cls``."""
    return type(f"_{cls.__name__}Twin", (), {"__slots__": [f.name for f in fields(cls)]})


# Frozen dataclasses are slow to build: __init__ goes through object.__setattr__, about a
# microsecond per object here, more than all the rest of a cached line. Plain attribute stores
# on an unfrozen twin with the same slots are 3-4x faster; then the class is swapped, which
# CPython allows between classes of one slot layout. The result is an ordinary instance
# (tests check it equals one built by __init__).
new: Final = object.__new__
SampleTwin: Final = _twin(Sample)
BucketTwin: Final = _twin(Bucket)
QuantileTwin: Final = _twin(Quantile)


def item_of(group: GroupInfo | None, value: float) -> Bucket | Quantile | None:
    """The bucket or quantile of a grouped sample's value, if its bound is a number."""
    if group is None or group[3] is None:
        return None
    if group[0] == LE:
        bucket = new(BucketTwin)
        bucket.upper_bound, bucket.cumulative_count = group[3], value
        bucket.__class__ = Bucket
        return cast(Bucket, bucket)
    quantile = new(QuantileTwin)
    quantile.quantile, quantile.value = group[3], value
    quantile.__class__ = Quantile
    return cast(Quantile, quantile)


def make_entry(
    name: str,
    labels: Labels,
    vtext: str,
    value: float,
    group: GroupInfo | None,
    *,
    ts: int | None = None,
) -> Entry:
    """A parsed sample line (see ``Entry``)."""
    sample = new(SampleTwin)
    sample.name, sample.labels, sample.value, sample.timestamp_ms = name, labels, value, ts
    sample.__class__ = Sample
    return (name, labels, vtext, sample, group, item_of(group, value))


def group_info(labels: Labels, label: str, keys: dict[Labels, Labels]) -> GroupInfo:
    """Split off ``le``/``quantile`` once per series, as metrics.group_histograms does.

    ``keys`` interns the grouping keys, so that the buckets of one series share one key object.
    """
    raw: str | None
    if labels and labels[-1][0] == label:  # TGI puts ``le`` last, prometheus_client first
        rest, raw = labels[:-1], labels[-1][1]
    elif labels and labels[0][0] == label:
        rest, raw = labels[1:], labels[0][1]
    else:
        rest = tuple(pair for pair in labels if pair[0] != label)
        raw = next((value for name, value in labels if name == label), None)
    if rest:
        key = rest if len(rest) < 2 else tuple(sorted(rest))
        key = keys.setdefault(key, key)
    else:
        key = rest
    try:
        bound = None if raw is None else float(raw)
    except ValueError:  # not a number: the bucket cannot be placed
        bound = None
    if bound is not None and math.isnan(bound):  # cannot be placed either
        bound = None
    return (label, rest, key, bound)


def guess_group(name: str, labels: Labels, keys: dict[Labels, Labels]) -> GroupInfo | None:
    """Group info for a series that looks like a bucket or a quantile, else None."""
    for label, _ in labels:
        if label == LE and name[-7:] == "_bucket":
            return group_info(labels, LE, keys)
        if label == QUANTILE:
            return group_info(labels, QUANTILE, keys)
    return None
