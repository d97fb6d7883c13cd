"""A snapshot: the outcome of one scrape of one target, in plain Python.

Snapshots are what every RPC returns; :mod:`tgi_collector.convert` turns them into protobuf.
A failed scrape is still a snapshot (``up`` is False and ``error`` says why), the way
Prometheus records ``up 0`` rather than failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tgi_collector.errors import ScrapeErrorKind
from tgi_collector.metrics import Exposition
from tgi_collector.tgi import ModelInfo, TgiView
from tgi_collector.window import Window

__all__ = ["ScrapeFailure", "ScrapeStats", "Snapshot"]


@dataclass(frozen=True, slots=True)
class ScrapeFailure:
    """Why a target is down."""

    kind: ScrapeErrorKind
    message: str
    http_status: int | None = None


@dataclass(frozen=True, slots=True)
class ScrapeStats:
    """Cost of one scrape: wall time, decompressed body bytes, samples parsed."""

    duration_seconds: float
    body_bytes: int
    samples: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One scrape of one target. ``view`` and ``exposition`` are None when the target is down.

    ``window`` (what happened since the previous scrape) is filled only by Watch, from the
    second scrape of a target on.
    """

    instance_id: str
    endpoint: str
    timestamp: datetime
    up: bool
    stats: ScrapeStats
    error: ScrapeFailure | None = None
    view: TgiView | None = None
    exposition: Exposition | None = None
    model: ModelInfo | None = None
    window: Window | None = None
