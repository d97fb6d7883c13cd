"""The scrape policy: link-local, cloud metadata and unspecified addresses are refused."""

from __future__ import annotations

import ipaddress

import pytest

from tgi_collector.errors import TargetDeniedError
from tgi_collector.policy import DENIED_MESSAGE, TargetPolicy

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
