import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Health(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_UNSPECIFIED: _ClassVar[Health]
    HEALTH_UP: _ClassVar[Health]
    HEALTH_DOWN: _ClassVar[Health]

class ErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_KIND_UNSPECIFIED: _ClassVar[ErrorKind]
    ERROR_KIND_CONNECT: _ClassVar[ErrorKind]
    ERROR_KIND_TIMEOUT: _ClassVar[ErrorKind]
    ERROR_KIND_HTTP_STATUS: _ClassVar[ErrorKind]
    ERROR_KIND_BODY_TOO_LARGE: _ClassVar[ErrorKind]
    ERROR_KIND_TOO_MANY_SAMPLES: _ClassVar[ErrorKind]
    ERROR_KIND_PARSE: _ClassVar[ErrorKind]
    ERROR_KIND_PROTOCOL: _ClassVar[ErrorKind]
    ERROR_KIND_DENIED: _ClassVar[ErrorKind]

class MetricType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_TYPE_UNSPECIFIED: _ClassVar[MetricType]
    METRIC_TYPE_COUNTER: _ClassVar[MetricType]
    METRIC_TYPE_GAUGE: _ClassVar[MetricType]
    METRIC_TYPE_HISTOGRAM: _ClassVar[MetricType]
    METRIC_TYPE_SUMMARY: _ClassVar[MetricType]
    METRIC_TYPE_UNTYPED: _ClassVar[MetricType]
HEALTH_UNSPECIFIED: Health
HEALTH_UP: Health
HEALTH_DOWN: Health
ERROR_KIND_UNSPECIFIED: ErrorKind
ERROR_KIND_CONNECT: ErrorKind
ERROR_KIND_TIMEOUT: ErrorKind
ERROR_KIND_HTTP_STATUS: ErrorKind
ERROR_KIND_BODY_TOO_LARGE: ErrorKind
ERROR_KIND_TOO_MANY_SAMPLES: ErrorKind
ERROR_KIND_PARSE: ErrorKind
ERROR_KIND_PROTOCOL: ErrorKind
ERROR_KIND_DENIED: ErrorKind
METRIC_TYPE_UNSPECIFIED: MetricType
METRIC_TYPE_COUNTER: MetricType
METRIC_TYPE_GAUGE: MetricType
METRIC_TYPE_HISTOGRAM: MetricType
METRIC_TYPE_SUMMARY: MetricType
METRIC_TYPE_UNTYPED: MetricType

class ScrapeError(_message.Message):
    __slots__ = ("kind", "message", "http_status")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    kind: ErrorKind
    message: str
    http_status: int
    def __init__(self, kind: _Optional[_Union[ErrorKind, str]] = ..., message: _Optional[str] = ..., http_status: _Optional[int] = ...) -> None: ...

class ScrapeStats(_message.Message):
    __slots__ = ("duration", "body_bytes", "samples")
    DURATION_FIELD_NUMBER: _ClassVar[int]
    BODY_BYTES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    duration: _duration_pb2.Duration
    body_bytes: int
    samples: int
    def __init__(self, duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., body_bytes: _Optional[int] = ..., samples: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "model_sha", "model_dtype", "version", "max_input_tokens", "max_total_tokens", "max_concurrent_requests")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA_FIELD_NUMBER: _ClassVar[int]
    MODEL_DTYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_sha: str
    model_dtype: str
    version: str
    max_input_tokens: int
    max_total_tokens: int
    max_concurrent_requests: int
    def __init__(self, model_id: _Optional[str] = ..., model_sha: _Optional[str] = ..., model_dtype: _Optional[str] = ..., version: _Optional[str] = ..., max_input_tokens: _Optional[int] = ..., max_total_tokens: _Optional[int] = ..., max_concurrent_requests: _Optional[int] = ...) -> None: ...

class RequestMetrics(_message.Message):
    __slots__ = ("success_total", "failure_total", "failures_by_err", "request_count", "queue_size", "mean_time_per_token_seconds", "validation_duration_seconds", "queue_duration_seconds", "inference_duration_seconds", "request_duration_seconds")
    class FailuresByErrEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SUCCESS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FAILURE_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FAILURES_BY_ERR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_COUNT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MEAN_TIME_PER_TOKEN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    success_total: float
    failure_total: float
    failures_by_err: _containers.ScalarMap[str, float]
    request_count: float
    queue_size: float
    mean_time_per_token_seconds: float
    validation_duration_seconds: float
    queue_duration_seconds: float
    inference_duration_seconds: float
    request_duration_seconds: float
    def __init__(self, success_total: _Optional[float] = ..., failure_total: _Optional[float] = ..., failures_by_err: _Optional[_Mapping[str, float]] = ..., request_count: _Optional[float] = ..., queue_size: _Optional[float] = ..., mean_time_per_token_seconds: _Optional[float] = ..., validation_duration_seconds: _Optional[float] = ..., queue_duration_seconds: _Optional[float] = ..., inference_duration_seconds: _Optional[float] = ..., request_duration_seconds: _Optional[float] = ...) -> None: ...

class SummaryValue(_message.Message):
    __slots__ = ("quantiles", "count", "sum")
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    quantiles: _containers.RepeatedCompositeFieldContainer[QuantileValue]
    count: float
    sum: float
    def __init__(self, quantiles: _Optional[_Iterable[_Union[QuantileValue, _Mapping]]] = ..., count: _Optional[float] = ..., sum: _Optional[float] = ...) -> None: ...

class QuantileValue(_message.Message):
    __slots__ = ("quantile", "value")
    QUANTILE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    quantile: float
    value: float
    def __init__(self, quantile: _Optional[float] = ..., value: _Optional[float] = ...) -> None: ...

class GenerationMetrics(_message.Message):
    __slots__ = ("input_length", "generated_tokens", "max_new_tokens", "generated_tokens_total", "input_tokens_total", "batch_current_size", "batch_current_max_tokens", "skipped_tokens")
    INPUT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BATCH_CURRENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_CURRENT_MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_length: float
    generated_tokens: float
    max_new_tokens: float
    generated_tokens_total: float
    input_tokens_total: float
    batch_current_size: float
    batch_current_max_tokens: float
    skipped_tokens: SummaryValue
    def __init__(self, input_length: _Optional[float] = ..., generated_tokens: _Optional[float] = ..., max_new_tokens: _Optional[float] = ..., generated_tokens_total: _Optional[float] = ..., input_tokens_total: _Optional[float] = ..., batch_current_size: _Optional[float] = ..., batch_current_max_tokens: _Optional[float] = ..., skipped_tokens: _Optional[_Union[SummaryValue, _Mapping]] = ...) -> None: ...

class BatchMetrics(_message.Message):
    __slots__ = ("inference_count_by_method", "inference_success_by_method", "inference_failure_by_method", "concat_by_reason")
    class InferenceCountByMethodEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class InferenceSuccessByMethodEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class InferenceFailureByMethodEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ConcatByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    INFERENCE_COUNT_BY_METHOD_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_SUCCESS_BY_METHOD_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_FAILURE_BY_METHOD_FIELD_NUMBER: _ClassVar[int]
    CONCAT_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    inference_count_by_method: _containers.ScalarMap[str, float]
    inference_success_by_method: _containers.ScalarMap[str, float]
    inference_failure_by_method: _containers.ScalarMap[str, float]
    concat_by_reason: _containers.ScalarMap[str, float]
    def __init__(self, inference_count_by_method: _Optional[_Mapping[str, float]] = ..., inference_success_by_method: _Optional[_Mapping[str, float]] = ..., inference_failure_by_method: _Optional[_Mapping[str, float]] = ..., concat_by_reason: _Optional[_Mapping[str, float]] = ...) -> None: ...

class HistogramSummary(_message.Message):
    __slots__ = ("family", "labels", "count", "sum", "mean", "p50", "p90", "p95", "p99")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    P50_FIELD_NUMBER: _ClassVar[int]
    P90_FIELD_NUMBER: _ClassVar[int]
    P95_FIELD_NUMBER: _ClassVar[int]
    P99_FIELD_NUMBER: _ClassVar[int]
    family: str
    labels: _containers.ScalarMap[str, str]
    count: float
    sum: float
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    def __init__(self, family: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., count: _Optional[float] = ..., sum: _Optional[float] = ..., mean: _Optional[float] = ..., p50: _Optional[float] = ..., p90: _Optional[float] = ..., p95: _Optional[float] = ..., p99: _Optional[float] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("name", "labels", "value", "timestamp_ms")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.ScalarMap[str, str]
    value: float
    timestamp_ms: int
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., value: _Optional[float] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class Bucket(_message.Message):
    __slots__ = ("upper_bound", "cumulative_count")
    UPPER_BOUND_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    upper_bound: float
    cumulative_count: float
    def __init__(self, upper_bound: _Optional[float] = ..., cumulative_count: _Optional[float] = ...) -> None: ...

class HistogramSeries(_message.Message):
    __slots__ = ("labels", "buckets", "count", "sum")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.ScalarMap[str, str]
    buckets: _containers.RepeatedCompositeFieldContainer[Bucket]
    count: float
    sum: float
    def __init__(self, labels: _Optional[_Mapping[str, str]] = ..., buckets: _Optional[_Iterable[_Union[Bucket, _Mapping]]] = ..., count: _Optional[float] = ..., sum: _Optional[float] = ...) -> None: ...

class SummarySeries(_message.Message):
    __slots__ = ("labels", "value")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.ScalarMap[str, str]
    value: SummaryValue
    def __init__(self, labels: _Optional[_Mapping[str, str]] = ..., value: _Optional[_Union[SummaryValue, _Mapping]] = ...) -> None: ...

class MetricFamily(_message.Message):
    __slots__ = ("name", "type", "help", "samples", "histograms", "summaries")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAMS_FIELD_NUMBER: _ClassVar[int]
    SUMMARIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: MetricType
    help: str
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    histograms: _containers.RepeatedCompositeFieldContainer[HistogramSeries]
    summaries: _containers.RepeatedCompositeFieldContainer[SummarySeries]
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[MetricType, str]] = ..., help: _Optional[str] = ..., samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ..., histograms: _Optional[_Iterable[_Union[HistogramSeries, _Mapping]]] = ..., summaries: _Optional[_Iterable[_Union[SummarySeries, _Mapping]]] = ...) -> None: ...

class Window(_message.Message):
    __slots__ = ("duration", "success_rate", "failure_rate", "failure_rate_by_err", "request_rate", "generated_tokens_rate", "input_tokens_rate", "histograms", "counter_reset")
    class FailureRateByErrEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DURATION_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_RATE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_RATE_BY_ERR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_RATE_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_RATE_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_RATE_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAMS_FIELD_NUMBER: _ClassVar[int]
    COUNTER_RESET_FIELD_NUMBER: _ClassVar[int]
    duration: _duration_pb2.Duration
    success_rate: float
    failure_rate: float
    failure_rate_by_err: _containers.ScalarMap[str, float]
    request_rate: float
    generated_tokens_rate: float
    input_tokens_rate: float
    histograms: _containers.RepeatedCompositeFieldContainer[HistogramSummary]
    counter_reset: bool
    def __init__(self, duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., success_rate: _Optional[float] = ..., failure_rate: _Optional[float] = ..., failure_rate_by_err: _Optional[_Mapping[str, float]] = ..., request_rate: _Optional[float] = ..., generated_tokens_rate: _Optional[float] = ..., input_tokens_rate: _Optional[float] = ..., histograms: _Optional[_Iterable[_Union[HistogramSummary, _Mapping]]] = ..., counter_reset: _Optional[bool] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("instance_id", "endpoint", "timestamp", "health", "error", "stats", "request_metrics", "generation_metrics", "batch_metrics", "histograms", "raw_metrics", "model_info", "window")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_METRICS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_METRICS_FIELD_NUMBER: _ClassVar[int]
    BATCH_METRICS_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAMS_FIELD_NUMBER: _ClassVar[int]
    RAW_METRICS_FIELD_NUMBER: _ClassVar[int]
    MODEL_INFO_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    endpoint: str
    timestamp: _timestamp_pb2.Timestamp
    health: Health
    error: ScrapeError
    stats: ScrapeStats
    request_metrics: RequestMetrics
    generation_metrics: GenerationMetrics
    batch_metrics: BatchMetrics
    histograms: _containers.RepeatedCompositeFieldContainer[HistogramSummary]
    raw_metrics: _containers.RepeatedCompositeFieldContainer[MetricFamily]
    model_info: ModelInfo
    window: Window
    def __init__(self, instance_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., health: _Optional[_Union[Health, str]] = ..., error: _Optional[_Union[ScrapeError, _Mapping]] = ..., stats: _Optional[_Union[ScrapeStats, _Mapping]] = ..., request_metrics: _Optional[_Union[RequestMetrics, _Mapping]] = ..., generation_metrics: _Optional[_Union[GenerationMetrics, _Mapping]] = ..., batch_metrics: _Optional[_Union[BatchMetrics, _Mapping]] = ..., histograms: _Optional[_Iterable[_Union[HistogramSummary, _Mapping]]] = ..., raw_metrics: _Optional[_Iterable[_Union[MetricFamily, _Mapping]]] = ..., model_info: _Optional[_Union[ModelInfo, _Mapping]] = ..., window: _Optional[_Union[Window, _Mapping]] = ...) -> None: ...
