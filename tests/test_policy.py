"""The scrape policy: built-in refusals in every spelling, allow and deny lists, registered
targets, and all of it end to end through a real server."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from fixture_server import FixtureServer
from reference import SEED_SAMPLE

from tgi_collector import convert
from tgi_collector.errors import InvalidRequestError, TargetDeniedError
from tgi_collector.policy import DENIED_MESSAGE, IPAddress, TargetPolicy, _parse_literal
from tgi_collector.registry import TargetRegistry
from tgi_collector.server import CollectorServer, ServerConfig
from tgi_collector.targets import Target
from tgi_collector.v1 import collector_pb2, collector_pb2_grpc, snapshot_pb2

DENIED_BY_DEFAULT = [
    "169.254.169.254",  # cloud metadata
    "169.254.1.2",  # any link-local
    "fe80::1",
    "[fe80::1]",  # URL spelling
    "fe80::1%lo",  # with a zone id
    "0.0.0.0",
    "0.1.2.3",  # "this network"
    "::",
    "[::]",
    "::ffff:169.254.169.254",  # IPv4-mapped
    "[::ffff:169.254.169.254]",
    "::ffff:0.0.0.0",
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "fd00:ec2::254",  # AWS metadata over IPv6
    "100.100.100.200",  # Alibaba metadata
    # Legacy IPv4 spellings only the resolver understands:
    "2852039166",
    "169.254.43518",
    "0",
]

ALLOWED = ["127.0.0.1", "::1", "[::1]", "10.1.2.3", "192.168.0.10", "::ffff:127.0.0.1"]


@pytest.mark.parametrize("host", DENIED_BY_DEFAULT)
async def test_refused_by_default(host: str) -> None:
    with pytest.raises(TargetDeniedError) as caught:
        await TargetPolicy().check(host, 80)
    # Generic: the message must not reveal what the host resolved to.
    assert str(caught.value) == DENIED_MESSAGE


@pytest.mark.parametrize("host", ALLOWED)
async def test_allowed_literals(host: str) -> None:
    addresses = await TargetPolicy().check(host, 80)
    assert addresses == [str(ipaddress.ip_address(host.strip("[]")))]


async def test_localhost_resolves_and_is_allowed() -> None:
    addresses = await TargetPolicy().check("localhost", 8080)
    assert addresses
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses)


async def test_unresolvable_name_is_not_a_policy_error() -> None:
    # .invalid never resolves (RFC 6761); the scrape reports the failure as CONNECT instead.
    assert await TargetPolicy().check("nonexistent.invalid", 80) == []


async def test_allow_link_local() -> None:
    policy = TargetPolicy(allow_link_local=True)
    assert await policy.check("169.254.1.2", 80) == ["169.254.1.2"]
    assert await policy.check("[fe80::1]", 80) == ["fe80::1"]
    assert await policy.check("::ffff:169.254.1.2", 80) == ["::ffff:a9fe:102"]
    # Metadata stays refused: it is a separate, more dangerous class.
    with pytest.raises(TargetDeniedError):
        await policy.check("169.254.169.254", 80)


async def test_allow_link_local_and_cloud_metadata() -> None:
    policy = TargetPolicy(allow_link_local=True, allow_cloud_metadata=True)
    assert await policy.check("169.254.169.254", 80) == ["169.254.169.254"]
    assert await policy.check("fd00:ec2::254", 80) == ["fd00:ec2::254"]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "::ffff:0.0.0.0"])
async def test_unspecified_is_always_refused(host: str) -> None:
    policy = TargetPolicy(allow_link_local=True, allow_cloud_metadata=True)
    with pytest.raises(TargetDeniedError):
        await policy.check(host, 80)


def test_is_allowed_on_addresses() -> None:
    policy = TargetPolicy()
    assert policy.is_allowed(ipaddress.ip_address("127.0.0.1"))
    assert not policy.is_allowed(ipaddress.ip_address("169.254.169.254"))
    assert not policy.is_allowed(ipaddress.ip_address("fe80::abcd"))
    assert "allow_link_local=False" in repr(policy)


# -- built-in refusals in every spelling ----------------------------------------------------------
# (host as it appears in a URL, what it denotes). Legacy IPv4 spellings are read with the
# inet_aton rules by the policy itself; test_legacy_spellings_agree_with_the_resolver checks that
# the system resolver reads them the same way.

BUILTIN_REFUSALS = [
    # cloud metadata
    pytest.param("169.254.169.254", id="metadata-ipv4"),
    pytest.param("[::ffff:169.254.169.254]", id="metadata-mapped-dotted"),
    pytest.param("::ffff:a9fe:a9fe", id="metadata-mapped-hex"),
    pytest.param("0:0:0:0:0:ffff:a9fe:a9fe", id="metadata-mapped-long"),
    pytest.param("64:ff9b::a9fe:a9fe", id="metadata-nat64"),
    pytest.param("[64:ff9b::169.254.169.254]", id="metadata-nat64-dotted"),
    pytest.param("2852039166", id="metadata-decimal"),
    pytest.param("0xa9fea9fe", id="metadata-hex"),
    pytest.param("0XA9FEA9FE", id="metadata-hex-upper"),
    pytest.param("0x00000000a9fea9fe", id="metadata-hex-zero-padded"),
    pytest.param("0251.0376.0251.0376", id="metadata-octal"),
    pytest.param("00000251.0376.0251.0376", id="metadata-octal-zero-padded"),
    pytest.param("0xa9.0xfe.0xa9.0xfe", id="metadata-hex-dotted"),
    pytest.param("0251.254.0xa9.254", id="metadata-mixed-bases"),
    pytest.param("169.254.43518", id="metadata-short-3-parts"),
    pytest.param("169.16689662", id="metadata-short-2-parts"),
    pytest.param("0xa9.0xfea9fe", id="metadata-short-hex"),
    pytest.param("169.254.170.2", id="metadata-ecs"),
    pytest.param("fd00:ec2::254", id="metadata-aws-ipv6"),
    pytest.param("[fd00:ec2::254]", id="metadata-aws-ipv6-brackets"),
    pytest.param("100.100.100.200", id="metadata-alibaba"),
    pytest.param("1684301000", id="metadata-alibaba-decimal"),
    pytest.param("::ffff:100.100.100.200", id="metadata-alibaba-mapped"),
    pytest.param("64:ff9b::6464:64c8", id="metadata-alibaba-nat64"),
    pytest.param("192.0.0.192", id="metadata-oracle"),
    # link-local
    pytest.param("169.254.1.2", id="link-local-ipv4"),
    pytest.param("169.254.255.255", id="link-local-ipv4-last"),
    pytest.param("2851995906", id="link-local-decimal"),
    pytest.param("0xa9fe0102", id="link-local-hex"),
    pytest.param("0251.0376.01.02", id="link-local-octal"),
    pytest.param("169.254.258", id="link-local-short"),
    pytest.param("::ffff:169.254.1.2", id="link-local-mapped"),
    pytest.param("64:ff9b::a9fe:102", id="link-local-nat64"),
    pytest.param("fe80::1", id="link-local-ipv6"),
    pytest.param("[fe80::1]", id="link-local-ipv6-brackets"),
    pytest.param("febf:ffff::1", id="link-local-ipv6-last-block"),
    pytest.param("fe80::1%lo", id="link-local-zone-name"),
    pytest.param("fe80::1%1", id="link-local-zone-number"),
    pytest.param("[fe80::1%25eth0]", id="link-local-zone-url-encoded"),
    # unspecified
    pytest.param("0.0.0.0", id="unspecified-ipv4"),
    pytest.param("0", id="unspecified-decimal"),
    pytest.param("0x0", id="unspecified-hex"),
    pytest.param("00", id="unspecified-octal"),
    pytest.param("0.0", id="unspecified-short"),
    pytest.param("0.1.2.3", id="this-network"),
    pytest.param("::", id="unspecified-ipv6"),
    pytest.param("[::]", id="unspecified-ipv6-brackets"),
    pytest.param("0:0:0:0:0:0:0:0", id="unspecified-ipv6-long"),
    pytest.param("::ffff:0.0.0.0", id="unspecified-mapped"),
    pytest.param("64:ff9b::", id="unspecified-nat64"),
    # multicast
    pytest.param("224.0.0.1", id="multicast-ipv4-first"),
    pytest.param("239.255.255.250", id="multicast-ipv4-ssdp"),
    pytest.param("3758096385", id="multicast-decimal"),
    pytest.param("0xe0000001", id="multicast-hex"),
    pytest.param("0340.0.0.1", id="multicast-octal"),
    pytest.param("224.1", id="multicast-short"),
    pytest.param("::ffff:224.0.0.1", id="multicast-mapped"),
    pytest.param("64:ff9b::e000:1", id="multicast-nat64"),
    pytest.param("ff02::1", id="multicast-ipv6"),
    pytest.param("[ff05::2]", id="multicast-ipv6-brackets"),
    pytest.param("ff02::1%lo", id="multicast-ipv6-zone"),
    # broadcast
    pytest.param("255.255.255.255", id="broadcast"),
    pytest.param("4294967295", id="broadcast-decimal"),
    pytest.param("0xffffffff", id="broadcast-hex"),
    pytest.param("0377.0377.0377.0377", id="broadcast-octal"),
    pytest.param("255.16777215", id="broadcast-short"),
    pytest.param("::ffff:255.255.255.255", id="broadcast-mapped"),
    pytest.param("64:ff9b::ffff:ffff", id="broadcast-nat64"),
]

# Just outside the refused ranges, or loopback in odd spellings: allowed, and the address
# returned is the one the spelling denotes (the one the client will connect to).
ALLOWED_SPELLINGS = [
    pytest.param("2130706433", "127.0.0.1", id="loopback-decimal"),
    pytest.param("0x7f000001", "127.0.0.1", id="loopback-hex"),
    pytest.param("0177.0.0.1", "127.0.0.1", id="loopback-octal"),
    pytest.param("127.1", "127.0.0.1", id="loopback-short"),
    pytest.param("010.0.0.1", "8.0.0.1", id="leading-zero-is-octal"),
    pytest.param("169.253.255.255", "169.253.255.255", id="below-link-local"),
    pytest.param("169.255.0.1", "169.255.0.1", id="above-link-local"),
    pytest.param("223.255.255.255", "223.255.255.255", id="below-multicast"),
    pytest.param("fec0::1", "fec0::1", id="above-link-local-ipv6"),
    pytest.param("fe00::1", "fe00::1", id="below-link-local-ipv6"),
    pytest.param("::ffff:7f00:1", "::ffff:7f00:1", id="loopback-mapped"),
]


@pytest.mark.parametrize("host", BUILTIN_REFUSALS)
async def test_builtin_refusals_in_every_spelling(host: str) -> None:
    with pytest.raises(TargetDeniedError) as caught:
        await TargetPolicy().check(host, 80)
    assert str(caught.value) == DENIED_MESSAGE


@pytest.mark.parametrize(("host", "address"), ALLOWED_SPELLINGS)
async def test_allowed_spellings_return_the_address_they_denote(host: str, address: str) -> None:
    assert await TargetPolicy().check(host, 80) == [address]


LEGACY_SPELLINGS = [
    "2852039166",
    "0xa9fea9fe",
    "0XA9FEA9FE",
    "0251.0376.0251.0376",
    "00000251.0376.0251.0376",
    "0xa9.0xfe.0xa9.0xfe",
    "0251.254.0xa9.254",
    "169.254.43518",
    "169.16689662",
    "0",
    "0.0",
    "4294967295",
    "0377.0377.0377.0377",
    "3758096385",
    "2130706433",
    "0177.0.0.1",
    "127.1",
    "010.0.0.1",
]


@pytest.mark.parametrize("host", LEGACY_SPELLINGS)
def test_legacy_spellings_agree_with_the_resolver(host: str) -> None:
    # The policy reads these spellings itself; the system resolver, where it accepts them at
    # all, must read them as the same address (on glibc it accepts every one of them).
    ours = _parse_literal(host)
    assert ours is not None
    try:
        infos = socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return
    assert {ipaddress.ip_address(info[4][0]) for info in infos} == {ours}


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("0x", id="hex-without-digits"),
        pytest.param("08.1.1.1", id="not-octal"),
        pytest.param("4294967296", id="too-big"),
        pytest.param("1.16777216", id="short-too-big"),
        pytest.param("256.1.1.1", id="part-too-big"),
        pytest.param("1.2.3.4.5", id="five-parts"),
        pytest.param("1..2", id="empty-part"),
        pytest.param("169.254.169.254.", id="trailing-dot"),
        pytest.param("1.2.3.4 junk", id="trailing-junk"),
        pytest.param("१२७.0.0.1", id="non-ascii-digits"),
        pytest.param("1_0.0.0.1", id="underscore"),
    ],
)
def test_not_legacy_spellings(host: str) -> None:
    # Not addresses: they go to the resolver as names, and whatever it answers is checked.
    assert _parse_literal(host) is None


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("0.0.0.0", id="unspecified"),
        pytest.param("::ffff:0.0.0.0", id="unspecified-mapped"),
        pytest.param("224.0.0.1", id="multicast"),
        pytest.param("ff02::1", id="multicast-ipv6"),
        pytest.param("64:ff9b::e000:1", id="multicast-nat64"),
        pytest.param("255.255.255.255", id="broadcast"),
        pytest.param("4294967295", id="broadcast-decimal"),
    ],
)
async def test_flags_never_lift_unspecified_multicast_broadcast(host: str) -> None:
    policy = TargetPolicy(allow_link_local=True, allow_cloud_metadata=True)
    with pytest.raises(TargetDeniedError):
        await policy.check(host, 80)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        pytest.param("2852039166", "169.254.169.254", id="decimal"),
        pytest.param("0xa9fea9fe", "169.254.169.254", id="hex"),
        pytest.param("0251.0376.0251.0376", "169.254.169.254", id="octal"),
        pytest.param("169.254.43518", "169.254.169.254", id="short"),
        pytest.param("64:ff9b::a9fe:a9fe", "64:ff9b::a9fe:a9fe", id="nat64"),
    ],
)
async def test_both_flags_lift_metadata_in_every_spelling(host: str, address: str) -> None:
    with pytest.raises(TargetDeniedError):
        await TargetPolicy(allow_link_local=True).check(host, 80)
    with pytest.raises(TargetDeniedError):
        await TargetPolicy(allow_cloud_metadata=True).check(host, 80)
    policy = TargetPolicy(allow_link_local=True, allow_cloud_metadata=True)
    assert await policy.check(host, 80) == [address]


# -- allow and deny lists -------------------------------------------------------------------------


class _StubResolverPolicy(TargetPolicy):
    """A policy whose names resolve from a table (no DNS in tests); literals as usual."""

    def __init__(self, names: dict[str, list[str]], **settings: Any) -> None:
        super().__init__(**settings)
        self.names = names
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        if _parse_literal(host) is not None:
            return await super().resolve(host, port)
        self.lookups.append(host)
        return [ipaddress.ip_address(a) for a in self.names.get(host, [])]


NAMES = {
    "tgi-0.internal": ["10.0.0.5"],
    "a.b.internal": ["10.0.0.6"],
    "internal": ["10.0.0.7"],
    "evilinternal": ["10.0.0.8"],
    "public.example": ["203.0.113.9"],
    "mixed.example": ["10.0.0.9", "203.0.113.10"],
    "meta.example": ["10.0.0.10", "169.254.169.254"],
    "xn--bcher-kva.example": ["10.0.0.11"],
    "tgi.xn--bcher-kva.example": ["10.0.0.12"],
    "v6.example": ["fd00::1"],
}

# (policy settings, host, allowed?)
LIST_CASES = [
    # deny_networks: any resolved address, in any spelling
    pytest.param({"deny_networks": ["10.0.0.0/8"]}, "10.1.2.3", False, id="deny-net-literal"),
    pytest.param({"deny_networks": ["10.0.0.0/8"]}, "0xa010203", False, id="deny-net-hex"),
    pytest.param({"deny_networks": ["10.0.0.0/8"]}, "::ffff:10.1.2.3", False, id="deny-net-mapped"),
    pytest.param({"deny_networks": ["10.0.0.0/8"]}, "64:ff9b::a01:203", False, id="deny-net-nat64"),
    pytest.param({"deny_networks": ["10.0.0.0/8"]}, "tgi-0.internal", False, id="deny-net-name"),
    pytest.param({"deny_networks": ["10.0.0.0/8"]}, "mixed.example", False, id="deny-net-any-addr"),
    pytest.param({"deny_networks": ["10.0.0.0/8"]}, "public.example", True, id="deny-net-other"),
    pytest.param({"deny_networks": ["10.0.0.5"]}, "tgi-0.internal", False, id="deny-bare-ipv4"),
    pytest.param({"deny_networks": ["10.0.0.5"]}, "a.b.internal", True, id="deny-bare-only-one"),
    pytest.param({"deny_networks": ["fd00::/8"]}, "v6.example", False, id="deny-net-ipv6"),
    pytest.param({"deny_networks": ["fd00::1"]}, "[fd00::1]", False, id="deny-bare-ipv6"),
    pytest.param({"deny_networks": ["fd00::1"]}, "[fd00::2]", True, id="deny-bare-ipv6-other"),
    pytest.param({"deny_networks": ["fd00::/8"]}, "10.0.0.1", True, id="deny-ipv6-not-ipv4"),
    # deny_hosts
    pytest.param({"deny_hosts": ["tgi-0.internal"]}, "tgi-0.internal", False, id="deny-host"),
    pytest.param({"deny_hosts": ["tgi-0.internal"]}, "TGI-0.Internal", False, id="deny-host-case"),
    pytest.param({"deny_hosts": ["tgi-0.internal"]}, "tgi-0.internal.", False, id="deny-host-dot"),
    pytest.param({"deny_hosts": ["TGI-0.INTERNAL."]}, "tgi-0.internal", False, id="deny-pat-norm"),
    pytest.param({"deny_hosts": ["tgi-0.internal"]}, "a.b.internal", True, id="deny-host-other"),
    pytest.param({"deny_hosts": ["tgi-0.internal"]}, "10.0.0.5", True, id="deny-host-not-addr"),
    # wildcards: any subdomain depth, never the bare suffix or a longer label
    pytest.param({"deny_hosts": ["*.internal"]}, "tgi-0.internal", False, id="wild-one-level"),
    pytest.param({"deny_hosts": ["*.internal"]}, "a.b.internal", False, id="wild-two-levels"),
    pytest.param({"deny_hosts": ["*.internal"]}, "A.B.INTERNAL.", False, id="wild-case-dot"),
    pytest.param({"deny_hosts": ["*.internal"]}, "internal", True, id="wild-not-bare"),
    pytest.param({"deny_hosts": ["*.internal"]}, "evilinternal", True, id="wild-not-longer"),
    pytest.param({"deny_hosts": ["*.b.internal"]}, "a.b.internal", False, id="wild-deep-suffix"),
    pytest.param({"deny_hosts": ["*.b.internal"]}, "tgi-0.internal", True, id="wild-deep-other"),
    # IDNA: the pattern and the host compare as the resolver sees them
    pytest.param({"deny_hosts": ["bücher.example"]}, "xn--bcher-kva.example", False, id="idna-pat"),
    pytest.param(
        {"deny_hosts": ["xn--bcher-kva.example"]}, "BÜCHER.example", False, id="idna-host"
    ),
    pytest.param({"deny_hosts": ["bücher.example"]}, "bücher\u3002example", False, id="idna-dot"),
    pytest.param({"deny_hosts": ["*.bücher.example"]}, "tgi.bücher.example", False, id="idna-wild"),
    # allow_networks: every address must be in them
    pytest.param({"allow_networks": ["10.0.0.0/8"]}, "10.1.2.3", True, id="allow-net"),
    pytest.param({"allow_networks": ["10.0.0.0/8"]}, "0xa010203", True, id="allow-net-hex"),
    pytest.param({"allow_networks": ["10.0.0.0/8"]}, "::ffff:10.1.2.3", True, id="allow-mapped"),
    pytest.param(
        {"allow_networks": ["10.0.0.0/8"]}, "64:ff9b::a01:203", False, id="allow-no-nat64"
    ),
    pytest.param({"allow_networks": ["10.0.0.0/8"]}, "tgi-0.internal", True, id="allow-net-name"),
    pytest.param({"allow_networks": ["10.0.0.0/8"]}, "mixed.example", False, id="allow-net-all"),
    pytest.param({"allow_networks": ["10.0.0.0/8"]}, "public.example", False, id="allow-net-other"),
    pytest.param({"allow_networks": ["10.0.0.0/8"]}, "127.0.0.1", False, id="allow-net-loopback"),
    pytest.param(
        {"allow_networks": ["10.0.0.0/8"]}, "nowhere.invalid", False, id="allow-unresolved"
    ),
    pytest.param({"allow_networks": ["fd00::/8"]}, "v6.example", True, id="allow-net-ipv6"),
    pytest.param(
        {"allow_networks": ["169.254.0.0/16"]}, "169.254.1.2", False, id="allow-no-lift-builtin"
    ),
    pytest.param(
        {"allow_networks": ["0.0.0.0/0"]}, "meta.example", False, id="allow-all-still-builtin"
    ),
    # allow_hosts: the name matches, whatever it resolves to (built-ins and deny aside)
    pytest.param({"allow_hosts": ["*.internal"]}, "a.b.internal", True, id="allow-host-wild"),
    pytest.param({"allow_hosts": ["*.internal"]}, "internal", False, id="allow-host-not-bare"),
    pytest.param(
        {"allow_hosts": ["*.internal"]}, "evilinternal", False, id="allow-host-not-longer"
    ),
    pytest.param({"allow_hosts": ["*.internal"]}, "10.0.0.5", False, id="allow-host-not-literal"),
    pytest.param({"allow_hosts": ["public.example"]}, "public.example", True, id="allow-host"),
    pytest.param({"allow_hosts": ["meta.example"]}, "meta.example", False, id="allow-host-builtin"),
    # either allow list suffices
    pytest.param(
        {"allow_hosts": ["public.example"], "allow_networks": ["10.0.0.0/8"]},
        "tgi-0.internal",
        True,
        id="allow-either-net",
    ),
    pytest.param(
        {"allow_hosts": ["public.example"], "allow_networks": ["10.0.0.0/8"]},
        "public.example",
        True,
        id="allow-either-host",
    ),
    # deny wins over allow
    pytest.param(
        {"allow_networks": ["10.0.0.0/8"], "deny_networks": ["10.0.0.5/32"]},
        "tgi-0.internal",
        False,
        id="deny-net-beats-allow-net",
    ),
    pytest.param(
        {"allow_hosts": ["*.internal"], "deny_networks": ["10.0.0.0/8"]},
        "tgi-0.internal",
        False,
        id="deny-net-beats-allow-host",
    ),
    pytest.param(
        {"allow_hosts": ["*.internal"], "deny_hosts": ["tgi-0.internal"]},
        "tgi-0.internal",
        False,
        id="deny-host-beats-allow-host",
    ),
    pytest.param(
        {"allow_networks": ["10.0.0.0/8"], "deny_hosts": ["*.internal"]},
        "a.b.internal",
        False,
        id="deny-host-beats-allow-net",
    ),
    pytest.param(
        {"allow_hosts": ["*.internal"], "deny_hosts": ["tgi-0.internal"]},
        "a.b.internal",
        True,
        id="deny-host-only-that-host",
    ),
]


@pytest.mark.parametrize(("settings", "host", "allowed"), LIST_CASES)
async def test_allow_and_deny_lists(settings: dict[str, Any], host: str, allowed: bool) -> None:
    policy = _StubResolverPolicy(NAMES, **settings)
    if allowed:
        assert await policy.check(host, 80) == [str(a) for a in await policy.resolve(host, 80)]
    else:
        with pytest.raises(TargetDeniedError) as caught:
            await policy.check(host, 80)
        assert str(caught.value) == DENIED_MESSAGE


async def test_denied_host_is_not_even_resolved() -> None:
    policy = _StubResolverPolicy(NAMES, deny_hosts=["*.internal"])
    with pytest.raises(TargetDeniedError):
        await policy.check("tgi-0.internal", 80)
    assert policy.lookups == []


async def test_allowed_host_that_does_not_resolve_is_not_a_policy_error() -> None:
    policy = _StubResolverPolicy(NAMES, allow_hosts=["*.internal"])
    assert await policy.check("gone.internal", 80) == []


async def test_real_resolution_with_lists() -> None:
    # localhost resolves (via /etc/hosts) to loopback only.
    assert await TargetPolicy(allow_hosts=["localhost"]).check("localhost", 80)
    assert await TargetPolicy(allow_networks=["127.0.0.0/8", "::1"]).check("localhost", 80)
    denying: list[dict[str, Any]] = [
        {"deny_networks": ["127.0.0.1/32"]},
        {"deny_hosts": ["localhost"]},
        {"allow_hosts": ["localhost"], "deny_networks": ["127.0.0.0/8", "::1"]},
        {"allow_networks": ["10.0.0.0/8"]},
    ]
    for settings in denying:
        with pytest.raises(TargetDeniedError):
            await TargetPolicy(**settings).check("localhost", 80)
    # A literal is never matched by host lists.
    with pytest.raises(TargetDeniedError):
        await TargetPolicy(allow_hosts=["localhost"]).check("127.0.0.1", 80)


def test_is_allowed_applies_networks() -> None:
    policy = TargetPolicy(allow_networks=["10.0.0.0/8"], deny_networks=["10.9.0.0/16"])
    assert policy.is_allowed(ipaddress.ip_address("10.1.2.3"))
    assert not policy.is_allowed(ipaddress.ip_address("10.9.2.3"))
    assert not policy.is_allowed(ipaddress.ip_address("127.0.0.1"))
    assert not policy.is_allowed(ipaddress.ip_address("224.0.0.1"))
    assert "10.0.0.0/8" in repr(policy)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"allow_networks": ["10.0.0.1/8"]}, "'10.0.0.1/8'", id="host-bits"),
        pytest.param({"deny_networks": ["10.0.0.0/33"]}, "'10.0.0.0/33'", id="prefix-too-long"),
        pytest.param({"deny_networks": ["nonsense"]}, "'nonsense'", id="not-a-network"),
        pytest.param({"deny_networks": [""]}, "deny_networks: ''", id="empty-network"),
        pytest.param({"deny_networks": ["fe80::%eth0/64"]}, "zone ids", id="network-zone"),
        pytest.param({"allow_networks": [10]}, "allow_networks: 10 is not", id="network-not-str"),
        pytest.param({"allow_networks": "10.0.0.0/8"}, "not a single string", id="networks-str"),
        pytest.param({"deny_hosts": ["*"]}, "deny_hosts: '*'", id="bare-star"),
        pytest.param({"deny_hosts": ["*."]}, "deny_hosts: '*.'", id="star-dot"),
        pytest.param({"deny_hosts": ["a.*.b"]}, "'a.*.b'", id="inner-star"),
        pytest.param({"deny_hosts": ["*foo.com"]}, "'*foo.com'", id="star-no-dot"),
        pytest.param({"deny_hosts": ["**.foo.com"]}, "'**.foo.com'", id="double-star"),
        pytest.param({"allow_hosts": ["a..b"]}, "'a..b'", id="empty-label"),
        pytest.param({"allow_hosts": ["has space.example"]}, "'has space.example'", id="space"),
        pytest.param({"allow_hosts": [""]}, "allow_hosts: ''", id="empty-host"),
        pytest.param({"allow_hosts": ["x" * 64 + ".com"]}, "allow_hosts:", id="long-label"),
        pytest.param({"allow_hosts": ["10.0.0.1"]}, "is an IP address", id="ip-as-host"),
        pytest.param({"deny_hosts": ["0x7f000001"]}, "is an IP address", id="hex-ip-as-host"),
        pytest.param({"deny_hosts": ["[::1]"]}, "is an IP address", id="ipv6-as-host"),
        pytest.param({"allow_hosts": "localhost"}, "not a single string", id="hosts-str"),
        pytest.param({"deny_hosts": [None]}, "deny_hosts: None is not a string", id="host-not-str"),
    ],
)
def test_bad_settings_are_value_errors_naming_the_entry(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        TargetPolicy(**settings)
    assert message in str(caught.value)


def test_settings_are_normalised() -> None:
    policy = TargetPolicy(
        allow_networks=["10.0.0.1", "fd00::/8"],
        allow_hosts=["TGI.Example.", "*.Bücher.example"],
    )
    assert [str(n) for n in policy.allow_networks] == ["10.0.0.1/32", "fd00::/8"]
    assert policy.allow_hosts == ("tgi.example", "*.xn--bcher-kva.example")


# -- registered targets ---------------------------------------------------------------------------

REGISTERED = (
    ("tgi-a", "http://tgi-a.example:8080"),
    ("tgi-b", "https://tgi-b.example/custom/metrics?x=1"),
)
A_URL = "http://tgi-a.example:8080/metrics"
B_URL = "https://tgi-b.example/custom/metrics?x=1"


def _registry(*, registered_only: bool) -> TargetRegistry:
    return TargetRegistry(REGISTERED, registered_only=registered_only)


# (registered_only, instance_id, url, expected Target, or the error type and message start)
REGISTRY_CASES = [
    # by id: both modes
    pytest.param(False, "tgi-a", "", Target("tgi-a", A_URL), id="open-by-id"),
    pytest.param(True, "tgi-a", "", Target("tgi-a", A_URL), id="only-by-id"),
    pytest.param(True, "tgi-b", "", Target("tgi-b", B_URL), id="only-by-id-custom-path"),
    pytest.param(
        False,
        "tgi-x",
        "",
        (
            InvalidRequestError,
            "target.endpoint: must not be empty (instance id 'tgi-x' is not a registered target)",
        ),
        id="open-unknown-id",
    ),
    pytest.param(
        True,
        "tgi-x",
        "",
        (InvalidRequestError, "target.endpoint: must not be empty (instance id 'tgi-x'"),
        id="only-unknown-id",
    ),
    pytest.param(
        True, "", "", (InvalidRequestError, "target.endpoint: must not be empty"), id="only-empty"
    ),
    pytest.param(
        True, "bad id", "", (InvalidRequestError, "target.instance_id:"), id="only-bad-id"
    ),
    # open mode: a URL is used as given, whatever the id
    pytest.param(
        False, "x", "http://10.0.0.1:80", Target("x", "http://10.0.0.1:80/metrics"), id="open-url"
    ),
    pytest.param(
        False, "tgi-a", "http://other:80/m", Target("tgi-a", "http://other:80/m"), id="open-id-url"
    ),
    pytest.param(False, "", A_URL, Target("", A_URL), id="open-registered-url-as-given"),
    # registered-only: the URL must be registered (any equivalent spelling) and the id match
    pytest.param(True, "", A_URL, Target("tgi-a", A_URL), id="only-url-empty-id"),
    pytest.param(True, "tgi-a", A_URL, Target("tgi-a", A_URL), id="only-url-and-id"),
    pytest.param(
        True, "", "http://TGI-A.example:8080/", Target("tgi-a", A_URL), id="only-url-spelling"
    ),
    pytest.param(
        True,
        "",
        "HTTPS://tgi-b.example:443/custom/metrics?x=1",
        Target("tgi-b", B_URL),
        id="only-url-default-port",
    ),
    pytest.param(True, "tgi-b", A_URL, (TargetDeniedError, DENIED_MESSAGE), id="only-id-mismatch"),
    pytest.param(
        True, "", "http://tgi-a.example:8081", (TargetDeniedError, DENIED_MESSAGE), id="only-port"
    ),
    pytest.param(
        True,
        "",
        "https://tgi-a.example:8080",
        (TargetDeniedError, DENIED_MESSAGE),
        id="only-scheme",
    ),
    pytest.param(
        True,
        "",
        "https://tgi-b.example/custom/metrics",
        (TargetDeniedError, DENIED_MESSAGE),
        id="only-query",
    ),
    pytest.param(
        True, "tgi-a", "http://10.0.0.1/", (TargetDeniedError, DENIED_MESSAGE), id="only-other-url"
    ),
    pytest.param(
        True,
        "",
        "ftp://tgi-a.example",
        (InvalidRequestError, "target.endpoint:"),
        id="only-bad-url",
    ),
]


@pytest.mark.parametrize(("registered_only", "instance_id", "url", "expected"), REGISTRY_CASES)
def test_registry_resolution(
    registered_only: bool,
    instance_id: str,
    url: str,
    expected: Target | tuple[type[Exception], str],
) -> None:
    registry = _registry(registered_only=registered_only)
    if isinstance(expected, Target):
        assert registry.resolve(instance_id, url) == expected
    else:
        error, message = expected
        with pytest.raises(error) as caught:
            registry.resolve(instance_id, url)
        assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("targets", "registered_only", "message"),
    [
        pytest.param(
            [("a", "http://h:1"), ("a", "http://h:2")],
            False,
            "registered_targets[1].instance_id: 'a' is registered twice",
            id="duplicate-id",
        ),
        pytest.param(
            [("a", "http://h:1"), ("b", "http://H:1/metrics")],
            False,
            "registered_targets[1].url: 'http://H:1/metrics' is already registered as 'a'",
            id="duplicate-url",
        ),
        pytest.param([("", "http://h:1")], False, "registered_targets[0].instance_id", id="no-id"),
        pytest.param(
            [("bad id", "http://h:1")], False, "registered_targets[0].instance_id:", id="bad-id"
        ),
        pytest.param(
            [("a", "")], False, "registered_targets[0].url: must not be empty", id="no-url"
        ),
        pytest.param([("a", "ftp://h")], False, "registered_targets[0].url: scheme", id="bad-url"),
        pytest.param([("a", "http://u:p@h")], False, "registered_targets[0].url", id="creds"),
        pytest.param([("a",)], False, "registered_targets[0]: ('a',) is not", id="not-a-pair"),
        pytest.param([("a", 1)], False, "registered_targets[0]: instance id and url", id="not-str"),
        pytest.param([], True, "registered_only is set but no targets", id="only-without-targets"),
    ],
)
def test_bad_registered_targets_are_value_errors(
    targets: list[Any], registered_only: bool, message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        TargetRegistry(targets, registered_only=registered_only)
    assert str(caught.value).startswith(message)


def test_registry_accessors() -> None:
    registry = _registry(registered_only=True)
    assert len(registry) == 2
    assert registry.get("tgi-a") == Target("tgi-a", A_URL)
    assert registry.get("nope") is None
    assert [t.instance_id for t in registry.targets] == ["tgi-a", "tgi-b"]
    assert "registered_only=True" in repr(registry)


def test_convert_without_registry_keeps_the_old_forms() -> None:
    request = collector_pb2.CollectRequest(
        target=collector_pb2.Target(instance_id="x", endpoint="http://h:1")
    )
    target, _options = convert.collect_request_from_proto(request)
    assert target == Target("x", "http://h:1/metrics")
    empty = collector_pb2.CollectRequest(target=collector_pb2.Target(instance_id="x"))
    with pytest.raises(InvalidRequestError, match="'x' is not a registered target"):
        convert.collect_request_from_proto(empty)
    assert convert.target_from_proto(request.target) == target


def test_convert_watch_with_registry_names_fields_and_dedupes() -> None:
    registry = _registry(registered_only=True)
    request = collector_pb2.WatchRequest(
        targets=[
            collector_pb2.Target(instance_id="tgi-a"),
            collector_pb2.Target(endpoint=A_URL),
            collector_pb2.Target(instance_id="tgi-b"),
        ]
    )
    spec = convert.watch_request_from_proto(request, convert.WatchLimits(), registry=registry)
    assert spec.targets == (Target("tgi-a", A_URL), Target("tgi-b", B_URL))
    bad = collector_pb2.WatchRequest(
        targets=[collector_pb2.Target(instance_id="tgi-a"), collector_pb2.Target(instance_id="z")]
    )
    with pytest.raises(InvalidRequestError, match=r"^targets\[1\].endpoint: must not be empty"):
        convert.watch_request_from_proto(bad, convert.WatchLimits(), registry=registry)
    other = collector_pb2.WatchRequest(targets=[collector_pb2.Target(endpoint="http://h:1")])
    with pytest.raises(TargetDeniedError):
        convert.watch_request_from_proto(other, convert.WatchLimits(), registry=registry)


# -- end to end through a real server -------------------------------------------------------------


@contextlib.asynccontextmanager
async def _serving(
    config: ServerConfig,
) -> AsyncIterator[collector_pb2_grpc.CollectorServiceStub]:
    async with (
        CollectorServer(config) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield collector_pb2_grpc.CollectorServiceStub(channel)


def _config(**settings: Any) -> ServerConfig:
    return ServerConfig(
        listen="127.0.0.1:0", grace_seconds=0.2, min_watch_interval_seconds=0.1, **settings
    )


def _collect(instance_id: str = "", endpoint: str = "") -> collector_pb2.CollectRequest:
    return collector_pb2.CollectRequest(
        target=collector_pb2.Target(instance_id=instance_id, endpoint=endpoint),
        options=collector_pb2.ScrapeOptions(skip_info=True, omit_raw_metrics=True),
    )


def _watch(*targets: collector_pb2.Target) -> collector_pb2.WatchRequest:
    request = collector_pb2.WatchRequest(
        targets=targets, options=collector_pb2.ScrapeOptions(skip_info=True, omit_raw_metrics=True)
    )
    request.interval.FromMilliseconds(200)
    return request


async def _first_snapshot(call: Any) -> snapshot_pb2.Snapshot:
    async with asyncio.timeout(10):
        while True:
            response = await call.read()
            assert response is not grpc.aio.EOF
            if response.HasField("snapshot"):
                call.cancel()
                return response.snapshot  # type: ignore[no-any-return]


async def _watch_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async with asyncio.timeout(10):
            async for _ in call:
                pass
    return raised.value


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"deny_networks": ("127.0.0.1/32",)}, id="deny-network"),
        pytest.param({"deny_networks": ("127.0.0.1",)}, id="deny-bare-address"),
        pytest.param({"allow_networks": ("127.0.0.2/32",)}, id="not-in-allow-network"),
    ],
)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433", "0x7f000001"])
async def test_denied_network_is_permission_denied_end_to_end(
    fixture_server: FixtureServer, settings: dict[str, Any], host: str
) -> None:
    fixture_server.route("/metrics", body=SEED_SAMPLE)
    endpoint = f"http://{host}:{fixture_server.port}/metrics"
    async with _serving(_config(**settings)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Collect(_collect("tgi-a", endpoint), timeout=10)
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert raised.value.details() == DENIED_MESSAGE
        error = await _watch_error(stub.Watch(_watch(collector_pb2.Target(endpoint=endpoint))))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error.details() == DENIED_MESSAGE
    assert fixture_server.hits("/metrics") == 0  # refused before any connection


async def test_deny_hosts_end_to_end(fixture_server: FixtureServer) -> None:
    fixture_server.route("/metrics", body=SEED_SAMPLE)
    async with _serving(_config(deny_hosts=("LOCALHOST",))) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Collect(_collect("", f"http://localhost:{fixture_server.port}/metrics"))
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert raised.value.details() == DENIED_MESSAGE
        # The same server by address is not named by the host list.
        response = await stub.Collect(_collect("", fixture_server.url("/metrics")))
        assert response.snapshot.health == snapshot_pb2.HEALTH_UP


async def test_allow_lists_end_to_end(fixture_server: FixtureServer) -> None:
    fixture_server.route("/metrics", body=SEED_SAMPLE)
    config = _config(allow_networks=("127.0.0.0/8",), allow_hosts=("*.example",))
    async with _serving(config) as stub:
        response = await stub.Collect(_collect("", fixture_server.url("/metrics")))
        assert response.snapshot.health == snapshot_pb2.HEALTH_UP
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Collect(_collect("", "http://[::2]:9/metrics"))
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert raised.value.details() == DENIED_MESSAGE


async def test_registered_only_end_to_end(fixture_server: FixtureServer) -> None:
    fixture_server.route("/metrics", body=SEED_SAMPLE)
    registered = fixture_server.url("/metrics")
    config = _config(registered_targets=(("tgi-a", fixture_server.base_url),), registered_only=True)
    async with _serving(config) as stub:
        # By id, empty URL: the registered URL is scraped.
        response = await stub.Collect(_collect("tgi-a"), timeout=10)
        snapshot = response.snapshot
        assert snapshot.health == snapshot_pb2.HEALTH_UP, snapshot.error.message
        assert snapshot.instance_id == "tgi-a"
        assert snapshot.endpoint == registered
        assert snapshot.request_metrics.request_count == 253
        # By the registered URL without an id: the registered id is used.
        response = await stub.Collect(_collect("", registered), timeout=10)
        assert response.snapshot.instance_id == "tgi-a"
        assert response.snapshot.health == snapshot_pb2.HEALTH_UP
        hits = fixture_server.hits("/metrics")
        # An unregistered URL, even on the same server, and a mismatched id: refused, unscraped.
        for request in (
            _collect("", fixture_server.url("/other")),
            _collect("tgi-a", fixture_server.url("/other")),
            _collect("tgi-z", registered),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Collect(request, timeout=10)
            assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert raised.value.details() == DENIED_MESSAGE
        assert fixture_server.hits("/metrics") == hits
        assert fixture_server.hits("/other") == 0
        # An unknown id with no URL is a bad request that says so.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Collect(_collect("tgi-z"), timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details() == (
            "target.endpoint: must not be empty (instance id 'tgi-z' is not a registered target)"
        )
        # Watch by registered id.
        snapshot = await _first_snapshot(
            stub.Watch(_watch(collector_pb2.Target(instance_id="tgi-a")))
        )
        assert snapshot.instance_id == "tgi-a"
        assert snapshot.endpoint == registered
        assert snapshot.health == snapshot_pb2.HEALTH_UP
        # Watch with one unregistered target among registered ones: the whole stream is refused.
        error = await _watch_error(
            stub.Watch(
                _watch(
                    collector_pb2.Target(instance_id="tgi-a"),
                    collector_pb2.Target(endpoint=fixture_server.url("/other")),
                )
            )
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error.details() == DENIED_MESSAGE


async def test_registered_targets_in_open_mode_and_still_under_the_policy(
    fixture_server: FixtureServer,
) -> None:
    fixture_server.route("/metrics", body=SEED_SAMPLE)
    config = _config(
        registered_targets=(
            ("tgi-a", fixture_server.url("/metrics")),
            ("denied", f"http://localhost:{fixture_server.port}/metrics"),
        ),
        deny_hosts=("localhost",),
    )
    async with _serving(config) as stub:
        response = await stub.Collect(_collect("tgi-a"), timeout=10)
        assert response.snapshot.health == snapshot_pb2.HEALTH_UP
        # Open mode: any other URL is still fine.
        response = await stub.Collect(_collect("x", fixture_server.url("/metrics")), timeout=10)
        assert response.snapshot.instance_id == "x"
        # A registered target is no exception to the address policy.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Collect(_collect("denied"), timeout=10)
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"deny_networks": ("10.0.0.1/8",)}, "deny_networks: '10.0.0.1/8'", id="net"),
        pytest.param({"allow_hosts": ("a.*.b",)}, "allow_hosts: 'a.*.b'", id="host"),
        pytest.param(
            {"registered_targets": (("a", "ftp://h"),)}, "registered_targets[0].url", id="target"
        ),
        pytest.param({"registered_only": True}, "no targets are registered", id="only-empty"),
    ],
)
def test_bad_policy_settings_fail_before_the_server_starts(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        CollectorServer(_config(**settings))
