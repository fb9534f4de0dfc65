"""What the API needs from the rest of the agent, as protocols.

The agent implements ``NodeView``; the cluster bus implements ``ControlSink``;
``bot.peer.PeerServer`` implements ``PeerHandler``.  The API only reads views
and records intent: it never promotes, demotes or fences anything itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol


class NodeView(Protocol):
    node_id: str

    def role(self) -> str: ...

    def health(self) -> tuple[bool, list[str]]: ...

    def status(self) -> dict[str, Any]:
        """The status object: the same as ``failover-bot status --json``."""
        ...

    def subscribe_events(self) -> AsyncIterator[dict[str, Any]]:
        """Live events (role changes, takeover steps, log lines) until the iterator ends."""
        ...


class ControlSink(Protocol):
    async def request_switchover(self, target: str, drain_timeout: float) -> None: ...

    async def set_paused(self, paused: bool) -> None: ...

    async def set_cordon(self, node: str, on: bool) -> None: ...

    async def set_failed(self, node: str, until_wall: float | None) -> None: ...

    async def append_event(self, kind: str, message: str, **fields: object) -> None: ...


class PeerHandler(Protocol):
    async def handle(self, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]: ...

    async def handle_outdate(
        self, body: bytes, signature: str | None
    ) -> tuple[int, dict[str, Any]]: ...
