"""Short owned jobs (takeover, demotion, acquire, bus writes...), one per kind at a time.

Every job has an owner (this registry): it is cancelled and awaited at shutdown,
and the fencer cancels the running ones before it fences.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

log = logging.getLogger(__name__)


class Jobs:
    def __init__(self, on_done: Callable[[str], None]) -> None:
        self._on_done = on_done
        self._all: set[asyncio.Task[Any]] = set()
        self._by_kind: dict[str, asyncio.Task[Any]] = {}
        self._starts: dict[str, int] = {}  # kind -> how many were started

    def start(self, kind: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A short owned job; its failure is logged, never lost."""
        task = asyncio.create_task(coro, name=kind)
        self._starts[kind] = self._starts.get(kind, 0) + 1
        self._all.add(task)
        self._by_kind[kind] = task

        def done(t: asyncio.Task[Any]) -> None:
            self._all.discard(t)
            if self._by_kind.get(kind) is t:
                del self._by_kind[kind]
            if not t.cancelled() and t.exception() is not None:
                log.error("%s failed: %r", kind, t.exception())
            self._on_done(kind)

        task.add_done_callback(done)
        return task

    def starts(self, kinds: Iterable[str]) -> int:
        """How many jobs of ``kinds`` were ever started."""
        return sum(self._starts.get(k, 0) for k in kinds)

    def running(self, kind: str) -> bool:
        task = self._by_kind.get(kind)
        return task is not None and not task.done()

    async def wait(self, kind: str) -> None:
        """Until the running job of ``kind`` (if any) has ended, however it ended."""
        task = self._by_kind.get(kind)
        if task is not None and not task.done():
            await asyncio.wait([task])

    async def finish(self, prefix: str, within: float) -> None:
        """Give the jobs whose kind starts with ``prefix`` up to ``within`` s to end
        (the bus writes of the last events), then cancel what is left of them."""
        pending = [t for k, t in self._by_kind.items() if k.startswith(prefix) and not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=within)
        await self.cancel([k for k in self._by_kind if k.startswith(prefix)])

    async def cancel(self, kinds: Iterable[str] | None = None) -> list[str]:
        """Cancel the running jobs (of ``kinds``, or all but the caller) and wait for them.

        Returns the kinds that were cancelled."""
        me = asyncio.current_task()
        wanted = set(kinds) if kinds is not None else None
        victims = [
            (kind, t)
            for kind, t in list(self._by_kind.items())
            if t is not me and not t.done() and (wanted is None or kind in wanted)
        ]
        if wanted is None:
            named = {t for _, t in victims}
            victims += [("", t) for t in self._all if t is not me and t not in named]
        for _, task in victims:
            task.cancel()
        await asyncio.gather(*(t for _, t in victims), return_exceptions=True)
        return [k for k, _ in victims if k]
