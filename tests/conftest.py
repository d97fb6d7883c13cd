"""Shared, generic pytest fixtures: a running test HTTP server, a dead port, the data folder."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fixture_server import FixtureServer

__all__ = ["data_dir", "fixture_server", "unused_port"]

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    """``tests/data``: the recorded expositions (see its README for sources)."""
    return DATA_DIR


@pytest.fixture
async def fixture_server() -> AsyncIterator[FixtureServer]:
    """A started :class:`FixtureServer` on 127.0.0.1, closed after the test."""
    async with FixtureServer() as server:
        yield server


@pytest.fixture
def unused_port() -> int:
    """A loopback TCP port with nothing listening on it (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
