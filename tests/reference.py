"""Independent reference computations for tests, written from the Prometheus documentation.

Deliberately naive and separate from ``tgi_collector``: tests compare the project's results
against these, so a bug in the project's code cannot hide in its own expected values.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

DATA = Path(__file__).parent / "data"
TGI_REAL = DATA / "tgi" / "tgi-3.3-real.prom"
SEED_SAMPLE = DATA / "seed" / "seed-plan-sample.prom"

_BUCKET = re.compile(r"^(?P<name>\w+)_bucket\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def buckets_from_text(text: str, family: str, labels: str = "") -> list[tuple[float, float]]:
    """``(le, cumulative count)`` pairs of one series, read straight from exposition text.

    ``labels`` is the exact text of the other labels, e.g. ``method="decode"`` ('' for none).
    """
    pairs = []
    for line in text.splitlines():
        match = _BUCKET.match(line)
        if not match or match["name"] != family:
            continue
        parts = [p for p in match["labels"].split(",") if p]
        le = next(p for p in parts if p.startswith("le="))
        others = ",".join(p for p in parts if not p.startswith("le="))
        if others == labels:
            pairs.append((float(le[4:-1]), float(match["value"])))
    return sorted(pairs)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """PromQL ``histogram_quantile`` for a well-formed series (sorted, with a +Inf bucket).

    From the PromQL documentation: rank = q * total; find the first bucket whose cumulative
    count reaches the rank; interpolate linearly between that bucket's lower and upper bound
    (lower bound 0 for the first bucket); if it is the +Inf bucket, answer the highest finite
    bound.
    """
    total = buckets[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    for index, (bound, count) in enumerate(buckets):
        if count >= rank:
            if math.isinf(bound):
                return buckets[index - 1][0]
            lower_bound, lower_count = (0.0, 0.0) if index == 0 else buckets[index - 1]
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
    return buckets[-2][0]


def scalar_from_text(text: str, sample: str) -> float:
    """The value of an unlabelled sample, read straight from exposition text."""
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert match, f"{sample} not in text"
    return float(match[1])
