"""Registered targets: scrape targets named in the configuration, by instance id.

An operator lists ``(instance_id, url)`` pairs; callers may then name a registered target by its
instance id alone (an empty endpoint). In registered-only mode nothing else may be scraped: a
request naming a URL that is not registered is refused with the scrape policy's generic
:data:`~tgi_collector.policy.DENIED_MESSAGE` (PERMISSION_DENIED), like an address the policy
refuses. Registered targets still pass the address policy on every scrape.

Resolution of one request target (``instance_id``, ``url``), field names as in the request:

- empty URL, id registered: the registered target;
- empty URL otherwise: ``INVALID_ARGUMENT`` "must not be empty", saying the id is not registered;
- URL given, open mode: the target as given (validated);
- URL given, registered-only mode: the URL must equal a registered URL (compared after the same
  normalisation as requests: ``http://h:p`` means ``http://h:p/metrics``; scheme and host case
  and a default port do not matter) and the id must be empty or that target's id; the result is
  the registered target. Anything else is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from tgi_collector.errors import InvalidRequestError, TargetDeniedError
from tgi_collector.policy import DENIED_MESSAGE
from tgi_collector.targets import Target, port_of, validate_instance_id, validate_url

__all__ = ["TargetRegistry"]


def _url_key(url: str) -> tuple[str, str, int, str, str]:
    """What makes two validated metrics URLs the same endpoint."""
    parts = urlsplit(url)
    # urlsplit lower-cases the scheme and the host name.
    host = (parts.hostname or "").rstrip(".")
    return parts.scheme, host, port_of(parts), parts.path or "/", parts.query


class TargetRegistry:
    """The registered targets, and whether only they may be scraped.

    ``targets`` are ``(instance_id, url)`` pairs; each is validated like a request target and
    must have an id; an id or URL registered twice is a :class:`ValueError` naming the entry.
    """

    def __init__(
        self, targets: Iterable[tuple[str, str]] = (), *, registered_only: bool = False
    ) -> None:
        self.registered_only = registered_only
        self._by_id: dict[str, Target] = {}
        self._by_url: dict[tuple[str, str, int, str, str], Target] = {}
        for index, entry in enumerate(targets):
            setting = f"registered_targets[{index}]"
            if not (isinstance(entry, tuple | list) and len(entry) == 2):
                raise ValueError(f"{setting}: {entry!r} is not an (instance_id, url) pair")
            instance_id, url = entry
            if not isinstance(instance_id, str) or not isinstance(url, str):
                raise ValueError(f"{setting}: instance id and url must be strings")
            if not instance_id:
                raise ValueError(f"{setting}.instance_id: must not be empty")
            try:
                validate_instance_id(instance_id, field=f"{setting}.instance_id")
                url = validate_url(url, field=f"{setting}.url")
            except InvalidRequestError as exc:
                raise ValueError(str(exc)) from None
            if instance_id in self._by_id:
                raise ValueError(f"{setting}.instance_id: {instance_id!r} is registered twice")
            key = _url_key(url)
            if key in self._by_url:
                other = self._by_url[key].instance_id
                raise ValueError(f"{setting}.url: {url!r} is already registered as {other!r}")
            target = Target(instance_id=instance_id, url=url)
            self._by_id[instance_id] = target
            self._by_url[key] = target
        if registered_only and not self._by_id:
            raise ValueError("registered_only is set but no targets are registered")

    def __repr__(self) -> str:
        return f"TargetRegistry({len(self._by_id)} targets, registered_only={self.registered_only})"

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def targets(self) -> tuple[Target, ...]:
        """The registered targets, in configuration order."""
        return tuple(self._by_id.values())

    def get(self, instance_id: str) -> Target | None:
        """The registered target with this id, if any."""
        return self._by_id.get(instance_id)

    def resolve(self, instance_id: str, url: str, *, field: str = "target") -> Target:
        """The target a request names (rules in the module docstring).

        Raises :class:`InvalidRequestError` for a malformed field (``field`` is the request
        path of the target message) and :class:`TargetDeniedError` for a target refused in
        registered-only mode.
        """
        if url:
            url = validate_url(url, field=f"{field}.endpoint")
        instance_id = validate_instance_id(instance_id, field=f"{field}.instance_id")
        if not url:
            registered = self._by_id.get(instance_id)
            if registered is not None:
                return registered
            if instance_id:
                raise InvalidRequestError(
                    f"{field}.endpoint",
                    f"must not be empty (instance id {instance_id!r} is not a registered target)",
                )
            raise InvalidRequestError(f"{field}.endpoint", "must not be empty")
        if not self.registered_only:
            return Target(instance_id=instance_id, url=url)
        registered = self._by_url.get(_url_key(url))
        if registered is None or instance_id not in ("", registered.instance_id):
            raise TargetDeniedError(DENIED_MESSAGE)
        return registered
