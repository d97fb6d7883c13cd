"""The TGI view: Prometheus families of a TGI server turned into typed, meaningful values.

SKELETON: the dataclasses below are the contract (convert.py and the server rely on them);
the functions are to be implemented.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tgi_collector.metrics import Bucket, Exposition, Labels, SummarySeries

__all__ = [
    "BatchMetrics",
    "GenerationMetrics",
    "HistogramSummary",
    "ModelInfo",
    "RequestMetrics",
    "TgiView",
    "build_view",
    "histogram_quantile",
    "model_info_from_json",
]


@dataclass(frozen=True, slots=True)
class HistogramSummary:
    """count/sum/mean and PromQL-style quantiles of one histogram series.

    ``mean`` and the quantiles are None when the series has no observations (count 0) or when
    they cannot be computed (no buckets).
    """

    family: str
    labels: Labels
    count: float
    sum: float
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True, slots=True)
class RequestMetrics:
    """Request counters and mean latencies, with the plan's field names (DESIGN.md)."""

    success_total: float = 0.0
    failure_total: float = 0.0
    failures_by_err: Mapping[str, float] = ...  # type: ignore[assignment]
    request_count: float = 0.0
    queue_size: float = 0.0
    mean_time_per_token_seconds: float | None = None
    validation_duration_seconds: float | None = None
    queue_duration_seconds: float | None = None
    inference_duration_seconds: float | None = None
    request_duration_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class GenerationMetrics:
    """Token means per request and batch gauges, with the plan's field names (DESIGN.md)."""

    input_length: float | None = None
    generated_tokens: float | None = None
    max_new_tokens: float | None = None
    generated_tokens_total: float = 0.0
    input_tokens_total: float = 0.0
    batch_current_size: float = 0.0
    batch_current_max_tokens: float = 0.0
    skipped_tokens: SummarySeries | None = None


@dataclass(frozen=True, slots=True)
class BatchMetrics:
    """Batch-level counters: inference calls by ``method``, concatenations by ``reason``."""

    inference_count_by_method: Mapping[str, float]
    inference_success_by_method: Mapping[str, float]
    inference_failure_by_method: Mapping[str, float]
    concat_by_reason: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Model identity from TGI's ``GET /info``."""

    model_id: str = ""
    model_sha: str = ""
    model_dtype: str = ""
    version: str = ""
    max_input_tokens: int = 0
    max_total_tokens: int = 0
    max_concurrent_requests: int = 0


@dataclass(frozen=True, slots=True)
class TgiView:
    """Everything the TGI view derives from one exposition."""

    request: RequestMetrics
    generation: GenerationMetrics
    batch: BatchMetrics
    histograms: tuple[HistogramSummary, ...]


def histogram_quantile(q: float, buckets: Sequence[Bucket]) -> float | None:
    """PromQL ``histogram_quantile`` over cumulative buckets."""
    raise NotImplementedError


def build_view(exposition: Exposition) -> TgiView:
    """Turn a parsed exposition into the TGI view."""
    raise NotImplementedError


def model_info_from_json(document: Any) -> ModelInfo:
    """Read a ``GET /info`` JSON document; unknown or missing fields are left empty."""
    raise NotImplementedError
