"""Which targets may be scraped: the scrape policy.

A collector that fetches whatever URL a caller names is an SSRF hole: a caller could make it
read a cloud metadata service (``http://169.254.169.254/``, which hands out credentials) or poke
at the collector's own host through ``0.0.0.0``. The policy resolves a target's host and refuses
it when *any* of its addresses is refused, so a name cannot smuggle a forbidden address in beside
an allowed one.

Refused by default:

- link-local addresses, ``169.254.0.0/16`` and ``fe80::/10`` (where cloud metadata lives);
- well-known cloud metadata addresses outside link-local (AWS ``fd00:ec2::254``, Alibaba
  ``100.100.100.200``, Oracle ``192.0.0.192``);
- unspecified addresses, ``0.0.0.0/8`` and ``::`` (on Linux, connecting to them reaches the
  local host);

each also in its IPv4-mapped (``::ffff:169.254.169.254``) and NAT64 (``64:ff9b::a9fe:a9fe``)
IPv6 spellings. Legacy IPv4 spellings such as ``2852039166`` or ``169.254.43518`` resolve (via
``getaddrinfo``) to the address they denote, which is what is checked.

Failing to resolve a name is *not* a policy decision: :meth:`TargetPolicy.check` then returns
no addresses and the scrape itself fails to connect (reported as a down target).

Known gap: the check resolves the name, and the HTTP client resolves it again when it connects;
a DNS server that answers differently the second time (DNS rebinding) can slip past. Closing it
needs the check at connect time, in the HTTP client's network backend.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from tgi_collector.errors import TargetDeniedError

__all__ = ["DENIED_MESSAGE", "TargetPolicy"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Deliberately generic: telling a caller *why* (which address a name resolved to) would turn the
# collector into a probe of the internal network.
DENIED_MESSAGE = "target address is not allowed by the scrape policy"

_LINK_LOCAL = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
)
_UNSPECIFIED = (
    # 0.0.0.0/8 is "this network"; 0.0.0.0 itself reaches the local host on Linux.
    ipaddress.ip_network("0.0.0.0/8"),
    ipaddress.ip_network("::/128"),
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


def _parse_literal(host: str) -> IPAddress | None:
    """``host`` as an IP address if it is a literal (brackets and zone ids allowed), else None."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class TargetPolicy:
    """Decides which target addresses may be scraped.

    ``allow_link_local`` lifts the link-local refusal for deployments that really serve TGI on
    link-local addresses; ``allow_cloud_metadata`` lifts the refusal of the well-known metadata
    addresses (169.254.169.254 needs both). Unspecified addresses are always refused.
    """

    def __init__(
        self, *, allow_link_local: bool = False, allow_cloud_metadata: bool = False
    ) -> None:
        self.allow_link_local = allow_link_local
        self.allow_cloud_metadata = allow_cloud_metadata

    def __repr__(self) -> str:
        return (
            f"TargetPolicy(allow_link_local={self.allow_link_local}, "
            f"allow_cloud_metadata={self.allow_cloud_metadata})"
        )

    def is_allowed(self, address: IPAddress) -> bool:
        """Whether one resolved address may be scraped."""
        candidates: list[IPAddress] = [_without_zone(address)]
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            candidates.append(embedded)
        for candidate in candidates:
            if any(candidate in network for network in _UNSPECIFIED):
                return False
            if not self.allow_cloud_metadata and candidate in _CLOUD_METADATA:
                return False
            if not self.allow_link_local and any(candidate in net for net in _LINK_LOCAL):
                return False
        return True

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address ``host`` resolves to for TCP, in resolver order, without duplicates.

        A literal IP is returned as is; a name that cannot be resolved yields an empty list.
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
        """Resolve ``host`` and return its addresses as text if all of them are allowed.

        Raises :class:`~tgi_collector.errors.TargetDeniedError` if any address is refused.
        Returns an empty list when the name does not resolve (not a policy error).
        """
        addresses = await self.resolve(host, port)
        if not all(self.is_allowed(address) for address in addresses):
            raise TargetDeniedError(DENIED_MESSAGE)
        return [str(address) for address in addresses]
