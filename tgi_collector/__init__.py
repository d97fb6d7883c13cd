"""tgi-collector: scrape Hugging Face TGI ``/metrics`` and serve correct, typed snapshots.

The public surface is pinned in ``__all__`` below: the parser, the TGI view, the scraper and
the domain types they exchange. The gRPC side lives in :mod:`tgi_collector.server` and
:mod:`tgi_collector.client`; the generated protobuf code in :mod:`tgi_collector.v1`.
"""

from tgi_collector._version import __version__
from tgi_collector.errors import (
    CollectorError,
    ExpositionError,
    InvalidRequestError,
    SampleLimitError,
    ScrapeError,
    ScrapeErrorKind,
    TargetDeniedError,
)
from tgi_collector.exposition import Parser, parse
from tgi_collector.metrics import Exposition, MetricFamily, MetricType, Sample
from tgi_collector.policy import TargetPolicy
from tgi_collector.scraper import Scraper
from tgi_collector.snapshot import ScrapeFailure, ScrapeStats, Snapshot
from tgi_collector.targets import ScrapeOptions, Target
from tgi_collector.tgi import ModelInfo, TgiView, build_view, histogram_quantile

__all__ = [
    "CollectorError",
    "Exposition",
    "ExpositionError",
    "InvalidRequestError",
    "MetricFamily",
    "MetricType",
    "ModelInfo",
    "Parser",
    "Sample",
    "SampleLimitError",
    "ScrapeError",
    "ScrapeErrorKind",
    "ScrapeFailure",
    "ScrapeOptions",
    "ScrapeStats",
    "Scraper",
    "Snapshot",
    "Target",
    "TargetDeniedError",
    "TargetPolicy",
    "TgiView",
    "__version__",
    "build_view",
    "histogram_quantile",
    "parse",
]
