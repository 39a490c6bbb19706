"""Feed parsing for a run: in worker processes for a large run, in the calling thread for a small one."""

from __future__ import annotations

import logging

from aggregator.extract import available_cores
from aggregator.models import ParsedFeed
from aggregator.parse import parse_feed
from aggregator.workers import WorkerDied, WorkerProcesses

log = logging.getLogger(__package__)


class ParseWorkers:
    """Feed parsing in worker processes, started on the first feed that needs parsing.

    feedparser takes 10-40 ms of CPU for a 50-entry feed. In the event loop's
    thread that holds up every request in flight and leaves the other cores
    idle: a cold run of 1,000 feeds spent most of its time there. Workers
    parse on every core while the loop keeps fetching. ``enabled=False``
    parses in the calling thread (small runs, where starting workers costs more).
    """

    def __init__(self, enabled: bool, workers: int | None = None):
        self.enabled = enabled
        self.workers = workers or available_cores()
        self._processes: WorkerProcesses | None = None

    async def parse(self, body: bytes, url: str, headers: dict[str, str]) -> ParsedFeed:
        if not self.enabled:
            return parse_feed(body, url, headers)
        if self._processes is None:
            self._processes = WorkerProcesses(parse_feed, self.workers)
        try:
            return await self._processes.call(body, url, headers)
        except WorkerDied as exc:  # killed, out of memory, or never started: parse here rather than lose the feed
            log.warning("a feed-parsing worker failed (%s); parsing %s in the main process", exc, url)
            return parse_feed(body, url, headers)

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (none until the first feed is parsed)."""
        return self._processes.pids if self._processes is not None else []

    async def __aenter__(self) -> ParseWorkers:
        return self

    async def close(self) -> None:
        """Stop the workers (a later feed starts new ones)."""
        if self._processes is not None:
            processes, self._processes = self._processes, None
            await processes.close()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
