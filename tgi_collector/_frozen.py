"""FrozenMapping: the read-only ``str -> float`` mapping of the frozen view dataclasses.

Why it is separate: it is a leaf that several modules build on (the TGI view's dataclasses in
:mod:`tgi_collector.tgi`, the exposition index in :mod:`tgi_collector._index`, the Watch window
in :mod:`tgi_collector.window`), so it lives below all of them. Import it from
:mod:`tgi_collector.tgi`, which re-exports it as part of its public surface.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

__all__ = ["FrozenMapping"]


class FrozenMapping(Mapping[str, float]):
    """A read-only ``str -> float`` mapping, so that the frozen views are really immutable.

    Unlike ``types.MappingProxyType`` it is hashable (so frozen dataclasses holding it are
    too), picklable and deep-copyable, and it compares equal to a dict with the same items.
    """

    __slots__ = ("_data",)

    def __init__(self, items: Mapping[str, float] | Iterable[tuple[str, float]] = ()) -> None:
        self._data: dict[str, float] = dict(items)

    def __getitem__(self, key: str) -> float:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self._data)

    def __reduce__(self) -> tuple[type[FrozenMapping], tuple[dict[str, float]]]:
        return (FrozenMapping, (self._data,))
