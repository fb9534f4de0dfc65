"""In-process fan-out of the node's events to live listeners (the API's SSE stream).

A slow listener loses its oldest events rather than holding anybody up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

QUEUE_LIMIT = 256


class EventHub:
    def __init__(self, keep: int = 200) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)

    def publish(self, event: dict[str, Any]) -> None:
        self.recent.append(event)
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)
