"""Which targets may be scraped: the scrape policy.

A collector that fetches whatever URL a caller names is an SSRF hole: a caller could make it
read a cloud metadata service (``http://169.254.169.254/``, which hands out credentials) or poke
at the collector's own host through ``0.0.0.0``. The policy resolves a target's host and refuses
it when *any* of its addresses is refused, so a name cannot smuggle a forbidden address in beside
an allowed one.

The rules, in order:

1. **Built-in refusals**, for every resolved address:

   - link-local, ``169.254.0.0/16`` and ``fe80::/10`` (where cloud metadata lives), unless
     ``allow_link_local``;
   - well-known cloud metadata addresses (``169.254.169.254``, ``169.254.170.2``, AWS
     ``fd00:ec2::254``, Alibaba ``100.100.100.200``, Oracle ``192.0.0.192``), unless
     ``allow_cloud_metadata`` (``169.254.169.254`` needs both flags);
   - always: unspecified ``0.0.0.0/8`` and ``::`` (on Linux, connecting to them reaches the
     local host), multicast ``224.0.0.0/4`` and ``ff00::/8``, broadcast ``255.255.255.255``;

   each also in its IPv4-mapped (``::ffff:169.254.169.254``) and NAT64 (``64:ff9b::a9fe:a9fe``)
   IPv6 spellings, and with any IPv6 zone id (``fe80::1%eth0``).
2. **Deny lists**: a host matching ``deny_hosts``, or any resolved address (or the IPv4 address
   it embeds) in ``deny_networks``, is refused. Deny always wins over allow.
3. **Allow lists**: if ``allow_hosts`` or ``allow_networks`` is set, a target is allowed only if
   its host matches ``allow_hosts`` or it resolves and *every* address is in ``allow_networks``
   (an IPv4-mapped address counts as the IPv4 address it maps: it is the same destination).
4. Otherwise it is allowed.

Allow lists do not lift the built-in refusals; only the two flags do.

Host patterns are exact names (``tgi-0.internal``) or ``*.suffix`` (``*.internal`` matches
``a.internal`` and ``a.b.internal``, not ``internal`` nor ``evilinternal``). Names compare
case-insensitively, without a trailing dot, after IDNA encoding (``bücher.example`` is
``xn--bcher-kva.example``), the way the resolver sees them. Host patterns never match IP
literals: addresses are for the network lists, where every spelling is caught.

Legacy IPv4 spellings (``2852039166``, ``0xa9fea9fe``, ``0251.0376.0251.0376``,
``169.254.43518``) are read here with the ``inet_aton`` rules, as the C resolver would, so the
address they denote is what is checked and connected to, whatever the platform's resolver.

Failing to resolve a name is *not* a policy decision: :meth:`TargetPolicy.check` then returns
no addresses and the scrape itself fails to connect (reported as a down target). The exception
is a policy with allow lists, where a name that matches no ``allow_hosts`` pattern and resolves
to nothing matches no allow rule and is refused.

No DNS rebinding window: :meth:`TargetPolicy.check` returns the addresses it checked and the
HTTP client (:mod:`tgi_collector._http`) connects to exactly those; the URL's host only names the
server in ``Host`` and in TLS. A second DNS answer is never asked for.

Refusals never say why (:data:`DENIED_MESSAGE`): telling a caller which address a name resolved
to, or which list matched, would turn the collector into a probe of the internal network.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from collections.abc import Iterable

from tgi_collector.errors import TargetDeniedError

__all__ = ["DENIED_MESSAGE", "TargetPolicy"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Deliberately generic: telling a caller *why* (which address a name resolved to) would turn the
# collector into a probe of the internal network. The server sends exactly this text.
DENIED_MESSAGE = "target is not allowed by the scrape policy"

_LINK_LOCAL = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
)
# Refused whatever the flags: nothing a TGI server could listen on.
_ALWAYS_REFUSED = (
    # 0.0.0.0/8 is "this network"; 0.0.0.0 itself reaches the local host on Linux.
    ipaddress.ip_network("0.0.0.0/8"),
    ipaddress.ip_network("::/128"),
    # Multicast.
    ipaddress.ip_network("224.0.0.0/4"),
    ipaddress.ip_network("ff00::/8"),
    # Limited broadcast.
    ipaddress.ip_network("255.255.255.255/32"),
)
_CLOUD_METADATA = frozenset(
    ipaddress.ip_address(text)
    for text in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, ... (also link-local)
        "169.254.170.2",  # AWS ECS task metadata (also link-local)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
    )
)
# RFC 6052 well-known NAT64 prefix: 64:ff9b::a.b.c.d is a.b.c.d behind a NAT64 gateway.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

# One part of a legacy IPv4 spelling, as inet_aton reads it: hex, octal or decimal.
_INET_ATON_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")
_HOST_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_MAX_HOST_LENGTH = 253


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped or NAT64), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _without_zone(address: IPAddress) -> IPAddress:
    """``address`` without its IPv6 zone id (``fe80::1%eth0`` compares unequal to ``fe80::1``)."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return ipaddress.IPv6Address(int(address))
    return address


def _spellings(address: IPAddress) -> list[IPAddress]:
    """``address`` without zone id, plus the IPv4 address it embeds (mapped or NAT64)."""
    spellings: list[IPAddress] = [_without_zone(address)]
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        spellings.append(embedded)
    return spellings


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """``text`` as a legacy IPv4 spelling (``inet_aton`` rules), else None.

    One to four dot-separated parts, each decimal, octal (leading ``0``) or hex (``0x``); the
    last part fills the remaining bytes: ``a`` is 32 bits, ``a.b`` is 8.24, ``a.b.c`` 8.8.16.
    Unlike glibc's ``inet_aton`` nothing may follow the address (no "1.2.3.4 junk").
    """
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_INET_ATON_PART.fullmatch(p) for p in parts):
        return None
    values = []
    for part in parts:
        if part[:2] in ("0x", "0X"):
            values.append(int(part[2:], 16))
        elif len(part) > 1 and part[0] == "0":
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *head, last = values
    if any(value > 0xFF for value in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = last
    for index, value in enumerate(head):
        number |= value << (24 - 8 * index)
    return ipaddress.IPv4Address(number)


def _parse_literal(host: str) -> IPAddress | None:
    """``host`` as an IP address if it is a literal, else None.

    Brackets and zone ids are allowed, and so are the legacy IPv4 spellings the C resolver
    accepts (``2852039166``, ``0xa9fea9fe``, ``0251.0376.0251.0376``, ``169.254.43518``).
    """
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return _inet_aton(text)


def _normalise_host(host: str) -> str:
    """A host name as the resolver sees it: IDNA-encoded, lower case, no trailing dot."""
    name = host[:-1] if host.endswith(".") else host
    # A name the codec refuses will not resolve either; it is compared as written.
    with contextlib.suppress(UnicodeError):
        name = name.encode("idna").decode("ascii")
    return name.lower()


def _host_pattern(entry: object, setting: str) -> str:
    """Validate one ``allow_hosts``/``deny_hosts`` entry; return it normalised."""
    if not isinstance(entry, str):
        raise ValueError(f"{setting}: {entry!r} is not a string")
    wildcard = entry.startswith("*.")
    name = entry[2:] if wildcard else entry
    normalised = _normalise_host(name)
    if _parse_literal(normalised) is not None:
        raise ValueError(
            f"{setting}: {entry!r} is an IP address; list addresses in the network settings"
        )
    labels = normalised.split(".")
    if (
        not normalised
        or len(normalised) > _MAX_HOST_LENGTH
        or not all(_HOST_LABEL.fullmatch(label) for label in labels)
    ):
        raise ValueError(
            f"{setting}: {entry!r} is not a host name or a '*.suffix' pattern"
            " (letters, digits, '-' and '_' in dot-separated labels)"
        )
    return f"*.{normalised}" if wildcard else normalised


def _network(entry: object, setting: str) -> IPNetwork:
    """Validate one ``allow_networks``/``deny_networks`` entry (a bare address is /32, /128)."""
    if not isinstance(entry, str):
        raise ValueError(f"{setting}: {entry!r} is not a string")
    if "%" in entry:
        raise ValueError(f"{setting}: {entry!r}: zone ids are not allowed in networks")
    try:
        return ipaddress.ip_network(entry.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(
            f"{setting}: {entry!r} is not a CIDR network such as 10.0.0.0/8 or fd00::/8 ({exc})"
        ) from exc


def _entries(values: Iterable[str], setting: str) -> tuple[str, ...]:
    if isinstance(values, str | bytes):
        raise ValueError(f"{setting} must be a list of strings, not a single string")
    return tuple(values)


def _host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether a normalised host name matches any normalised pattern."""
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


class TargetPolicy:
    """Decides which targets may be scraped (rules in the module docstring).

    ``allow_link_local`` lifts the link-local refusal for deployments that really serve TGI on
    link-local addresses; ``allow_cloud_metadata`` lifts the refusal of the well-known metadata
    addresses (169.254.169.254 needs both). Unspecified, multicast and broadcast addresses are
    always refused. ``allow_networks``/``deny_networks`` are CIDRs (a bare address is one
    address); ``allow_hosts``/``deny_hosts`` are names or ``*.suffix`` patterns. A bad entry is a
    :class:`ValueError` naming it.
    """

    def __init__(
        self,
        *,
        allow_link_local: bool = False,
        allow_cloud_metadata: bool = False,
        allow_networks: Iterable[str] = (),
        deny_networks: Iterable[str] = (),
        allow_hosts: Iterable[str] = (),
        deny_hosts: Iterable[str] = (),
    ) -> None:
        self.allow_link_local = allow_link_local
        self.allow_cloud_metadata = allow_cloud_metadata
        self.allow_networks: tuple[IPNetwork, ...] = tuple(
            _network(e, "allow_networks") for e in _entries(allow_networks, "allow_networks")
        )
        self.deny_networks: tuple[IPNetwork, ...] = tuple(
            _network(e, "deny_networks") for e in _entries(deny_networks, "deny_networks")
        )
        self.allow_hosts: tuple[str, ...] = tuple(
            _host_pattern(e, "allow_hosts") for e in _entries(allow_hosts, "allow_hosts")
        )
        self.deny_hosts: tuple[str, ...] = tuple(
            _host_pattern(e, "deny_hosts") for e in _entries(deny_hosts, "deny_hosts")
        )

    def __repr__(self) -> str:
        return (
            f"TargetPolicy(allow_link_local={self.allow_link_local}, "
            f"allow_cloud_metadata={self.allow_cloud_metadata}, "
            f"allow_networks={[str(n) for n in self.allow_networks]}, "
            f"deny_networks={[str(n) for n in self.deny_networks]}, "
            f"allow_hosts={list(self.allow_hosts)}, deny_hosts={list(self.deny_hosts)})"
        )

    @property
    def has_allow_lists(self) -> bool:
        """Whether targets must match an allow list (rule 3)."""
        return bool(self.allow_networks or self.allow_hosts)

    def _refused(self, address: IPAddress) -> bool:
        """Rules 1 and 2 for one address: built-in refusals and ``deny_networks``."""
        for candidate in _spellings(address):
            if any(candidate in network for network in _ALWAYS_REFUSED):
                return True
            if not self.allow_cloud_metadata and candidate in _CLOUD_METADATA:
                return True
            if not self.allow_link_local and any(candidate in net for net in _LINK_LOCAL):
                return True
            if any(candidate in network for network in self.deny_networks):
                return True
        return False

    def _in_allow_networks(self, address: IPAddress) -> bool:
        bare = _without_zone(address)
        spellings = [bare]
        if isinstance(bare, ipaddress.IPv6Address) and bare.ipv4_mapped is not None:
            spellings.append(bare.ipv4_mapped)
        return any(s in network for s in spellings for network in self.allow_networks)

    def is_allowed(self, address: IPAddress) -> bool:
        """Whether a target given as this IP address may be scraped (host lists aside)."""
        if self._refused(address):
            return False
        return not self.has_allow_lists or self._in_allow_networks(address)

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address ``host`` resolves to for TCP, in resolver order, without duplicates.

        A literal IP (legacy IPv4 spellings included) is returned as the address it denotes; a
        name that cannot be resolved yields an empty list.
        """
        literal = _parse_literal(host)
        if literal is not None:
            return [literal]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except (OSError, UnicodeError):
            # gaierror is an OSError; UnicodeError comes from IDNA encoding of odd names. Either
            # way the connection attempt will fail too, and report it better than we could.
            return []
        addresses: list[IPAddress] = []
        for _family, _type, _proto, _canonname, sockaddr in infos:
            address = _parse_literal(str(sockaddr[0]))
            if address is not None and address not in addresses:
                addresses.append(address)
        return addresses

    async def check(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` and return its addresses as text if the policy allows the target.

        Raises :class:`~tgi_collector.errors.TargetDeniedError` (with :data:`DENIED_MESSAGE`)
        if any address is refused or the target matches no allow list. Returns an empty list
        when the name does not resolve (not a policy error) unless allow lists are set and the
        host matches none of ``allow_hosts``. The caller must connect to exactly the returned
        addresses.
        """
        is_name = _parse_literal(host) is None
        name = _normalise_host(host) if is_name else ""
        if is_name and _host_matches(name, self.deny_hosts):
            raise TargetDeniedError(DENIED_MESSAGE)
        addresses = await self.resolve(host, port)
        if any(self._refused(address) for address in addresses):
            raise TargetDeniedError(DENIED_MESSAGE)
        if self.has_allow_lists and not (
            (is_name and _host_matches(name, self.allow_hosts))
            or (addresses and all(self._in_allow_networks(a) for a in addresses))
        ):
            raise TargetDeniedError(DENIED_MESSAGE)
        return [str(address) for address in addresses]
