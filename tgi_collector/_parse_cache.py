"""The parse state one target URL keeps between its scrapes, and where a body gets parsed.

Why it is separate: :mod:`tgi_collector.scraper` runs one scrape (deadline, HTTP, outcome);
what makes the next scrape of the same target cheap (the parser's series cache and the last
view) and the rule for parsing a large body off the event loop are their own concern, used by
the scraper's per-URL LRU.
"""

from __future__ import annotations

import asyncio

from tgi_collector import tgi
from tgi_collector.exposition import Parser
from tgi_collector.metrics import Exposition

__all__ = ["TargetCaches"]

# Bodies of more lines (or characters) than this are parsed in a worker thread: at about a
# microsecond per line, a 16 MiB body of short lines would otherwise hold the event loop (every
# other scrape loop and RPC) for seconds. A real TGI body (~100 kB, ~2,500 lines) is parsed
# inline (a few ms): a thread hop would cost more.
_INLINE_PARSE_LINES = 20_000
_INLINE_PARSE_CHARS = 1 << 20


class TargetCaches:
    """What the scrapes of one target URL remember of each other."""

    __slots__ = ("_parsing", "parser", "views")

    def __init__(self) -> None:
        self.parser = Parser()
        self.views = tgi.ViewCache()
        self._parsing: asyncio.Future[Exposition] | None = None

    async def parse(self, text: str, max_samples: int) -> Exposition:
        """Parse with this target's parser: inline, or in a thread for a large body.

        A scrape that hits its deadline leaves a threaded parse running (a thread cannot be
        interrupted); the parser is not thread-safe, so the next parse of the target waits for
        it first, within its own deadline.
        """
        if self._parsing is not None:
            await asyncio.wait({self._parsing})
        if len(text) <= _INLINE_PARSE_CHARS and text.count("\n") <= _INLINE_PARSE_LINES:
            return self.parser.parse(text, max_samples=max_samples)
        future = asyncio.ensure_future(
            asyncio.to_thread(self.parser.parse, text, max_samples=max_samples)
        )
        self._parsing = future
        future.add_done_callback(self._parsed)
        # shield: a deadline cancels the scrape, not the parse the parser is busy with.
        return await asyncio.shield(future)

    def _parsed(self, future: asyncio.Future[Exposition]) -> None:
        if self._parsing is future:
            self._parsing = None
        if not future.cancelled():
            future.exception()  # retrieved: a parse error nobody waits for is not "lost"
