"""The settings of ``tgi-collector serve``, built from ``ServerConfig`` and the layout.

:data:`SETTINGS` holds one :class:`Setting` per field of
:class:`~tgi_collector.server.ServerConfig`, read with :func:`dataclasses.fields` (so a new field
is a setting at once, with its type and default), plus ``log.level`` and ``log.format``; each
gets its key path, flag and checks from :mod:`tgi_collector._config_layout` and its environment
variable from its key path. They are sorted in file order, the order of ``check-config`` output
and of ``serve --help``. The lookups by key, by variable and of the tables are built once here,
at import, for the modules that read the sources.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass

from tgi_collector._config_layout import GLOBAL_PLACES, LAYOUT, SECTIONS, Place
from tgi_collector.server import ServerConfig

__all__ = [
    "BY_ENV",
    "BY_KEY",
    "ENV_PREFIX",
    "SETTINGS",
    "TABLES",
    "UNSUPPORTED_FIELDS",
    "Kind",
    "Setting",
    "build_settings",
    "env_name",
    "kind_of",
]

ENV_PREFIX = "TGI_COLLECTOR_"


class Kind(enum.Enum):
    """The value type of a setting, from its ``ServerConfig`` annotation."""

    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    STR = "str"
    STR_LIST = "list of str"  # tuple[str, ...]
    TARGETS = "list of (instance_id, url)"  # tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its key path in the file, its variable, its flag, type and default."""

    key: str
    field: str | None  # the ServerConfig field; None for log.level
    kind: Kind
    optional: bool  # ``X | None``: may be unset
    default: object
    env: str
    flag: str
    help: str
    metavar: str | None
    placed: bool  # False: not in LAYOUT, placed by the fallback
    zero_ok: bool = False
    check: Callable[[str], str | None] | None = None
    path: bool = False

    @property
    def section(self) -> str:
        return self.key.rpartition(".")[0]

    @property
    def name(self) -> str:
        return self.key.rpartition(".")[2]


def kind_of(annotation: object) -> tuple[Kind, bool] | None:
    """The kind of a ``ServerConfig`` annotation and whether it is optional; None: unsupported."""
    optional = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) != 1 or len(args) != 2:
            return None
        annotation, optional = rest[0], True
    for simple, kind in ((bool, Kind.BOOL), (int, Kind.INT), (float, Kind.FLOAT), (str, Kind.STR)):
        if annotation is simple:
            return kind, optional
    if annotation == tuple[str, ...] and not optional:
        return Kind.STR_LIST, False
    if annotation == tuple[tuple[str, str], ...] and not optional:
        return Kind.TARGETS, False
    return None


def env_name(key: str) -> str:
    """The variable of key ``section.name``: ``TGI_COLLECTOR_SECTION_NAME``."""
    return ENV_PREFIX + key.replace(".", "_").upper()


def build_settings() -> tuple[tuple[Setting, ...], tuple[str, ...]]:
    """Every setting in file order, and the ``ServerConfig`` fields of a type not supported."""
    hints = typing.get_type_hints(ServerConfig)
    settings: list[Setting] = []
    unsupported: list[str] = []
    for field in dataclasses.fields(ServerConfig):
        kind = kind_of(hints[field.name])
        if field.default is not dataclasses.MISSING:
            default: object = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = dataclasses.MISSING
        if kind is None or default is dataclasses.MISSING:
            unsupported.append(field.name)
            continue
        place = LAYOUT.get(field.name)
        placed = place is not None
        if place is None:
            place = Place(field.name, "--" + field.name.replace("_", "-"), field.name)
        settings.append(
            Setting(
                key=place.key,
                field=field.name,
                kind=kind[0],
                optional=kind[1],
                default=default,
                env=env_name(place.key),
                flag=place.flag,
                help=place.help,
                metavar=place.metavar,
                placed=placed,
                zero_ok=place.zero_ok,
                check=place.check,
                path=place.path,
            )
        )
    settings.extend(
        Setting(
            key=place.key,
            field=None,
            kind=Kind.STR,
            optional=False,
            default=default,
            env=env_name(place.key),
            flag=place.flag,
            help=place.help,
            metavar=place.metavar,
            placed=True,
            check=place.check,
        )
        for place, _, default in GLOBAL_PLACES
    )
    layout_order = {key: index for index, key in enumerate(place.key for place in LAYOUT.values())}

    def order(setting: Setting) -> tuple[int, int, int]:
        section = SECTIONS.index(setting.section) if setting.section in SECTIONS else 99
        # Within a section: scalars and lists first, then arrays of tables (TOML needs them last).
        return (
            section,
            setting.kind is Kind.TARGETS,
            layout_order.get(setting.key, len(layout_order)),
        )

    settings.sort(key=order)
    for attribute in ("key", "env", "flag"):
        names = [getattr(setting, attribute) for setting in settings]
        duplicates = {name for name in names if names.count(name) > 1}
        if duplicates:  # pragma: no cover - a mistake in LAYOUT, caught by the tests at import
            raise RuntimeError(f"config settings share a {attribute}: {sorted(duplicates)}")
    return tuple(settings), tuple(unsupported)


#: Every setting, in file order. ``UNSUPPORTED_FIELDS``: ServerConfig fields of a type this
#: package cannot read (they keep their default; a test keeps this empty).
SETTINGS, UNSUPPORTED_FIELDS = build_settings()
BY_KEY: dict[str, Setting] = {setting.key: setting for setting in SETTINGS}
BY_ENV: dict[str, Setting] = {setting.env: setting for setting in SETTINGS}
# Every table that holds settings, and every table above one ("policy" for "policy.targets").
TABLES: frozenset[str] = frozenset(
    ".".join(parts[:end])
    for parts in (setting.key.split(".") for setting in SETTINGS)
    for end in range(1, len(parts))
)
