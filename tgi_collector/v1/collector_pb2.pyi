import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from tgi_collector.v1 import snapshot_pb2 as _snapshot_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Target(_message.Message):
    __slots__ = ("instance_id", "endpoint")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    endpoint: str
    def __init__(self, instance_id: _Optional[str] = ..., endpoint: _Optional[str] = ...) -> None: ...

class ScrapeOptions(_message.Message):
    __slots__ = ("timeout", "max_body_bytes", "max_samples", "omit_raw_metrics", "skip_info")
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_BODY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    OMIT_RAW_METRICS_FIELD_NUMBER: _ClassVar[int]
    SKIP_INFO_FIELD_NUMBER: _ClassVar[int]
    timeout: _duration_pb2.Duration
    max_body_bytes: int
    max_samples: int
    omit_raw_metrics: bool
    skip_info: bool
    def __init__(self, timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_body_bytes: _Optional[int] = ..., max_samples: _Optional[int] = ..., omit_raw_metrics: _Optional[bool] = ..., skip_info: _Optional[bool] = ...) -> None: ...

class CollectRequest(_message.Message):
    __slots__ = ("target", "options")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    target: Target
    options: ScrapeOptions
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ..., options: _Optional[_Union[ScrapeOptions, _Mapping]] = ...) -> None: ...

class CollectResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: _snapshot_pb2.Snapshot
    def __init__(self, snapshot: _Optional[_Union[_snapshot_pb2.Snapshot, _Mapping]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("targets", "interval", "options", "updates_only", "suppress_unchanged", "heartbeat_interval")
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    UPDATES_ONLY_FIELD_NUMBER: _ClassVar[int]
    SUPPRESS_UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedCompositeFieldContainer[Target]
    interval: _duration_pb2.Duration
    options: ScrapeOptions
    updates_only: bool
    suppress_unchanged: bool
    heartbeat_interval: _duration_pb2.Duration
    def __init__(self, targets: _Optional[_Iterable[_Union[Target, _Mapping]]] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., options: _Optional[_Union[ScrapeOptions, _Mapping]] = ..., updates_only: _Optional[bool] = ..., suppress_unchanged: _Optional[bool] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SyncMarker(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("snapshot", "sync", "heartbeat", "coalesced")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    COALESCED_FIELD_NUMBER: _ClassVar[int]
    snapshot: _snapshot_pb2.Snapshot
    sync: SyncMarker
    heartbeat: Heartbeat
    coalesced: int
    def __init__(self, snapshot: _Optional[_Union[_snapshot_pb2.Snapshot, _Mapping]] = ..., sync: _Optional[_Union[SyncMarker, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., coalesced: _Optional[int] = ...) -> None: ...
