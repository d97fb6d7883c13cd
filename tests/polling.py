"""Waiting for a condition in tests, bounded in time (for state with no event to await)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable


async def wait_until(predicate: Callable[[], object], timeout: float = 3.0) -> None:
    """Poll ``predicate`` every 20 ms until it is true; TimeoutError after ``timeout`` s."""
    async with asyncio.timeout(timeout):
        for _ in itertools.count():
            if predicate():
                return
            await asyncio.sleep(0.02)
