"""One JSON-line request over loopback TCP: the simulators' control interfaces."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any


async def request(port: int, cmd: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:  # noqa: ASYNC109
    """Send ``cmd`` as one JSON line to 127.0.0.1:port and return the JSON object answered."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(json.dumps(cmd).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
    if not line:
        raise ConnectionError("the control connection closed without an answer")
    answer = json.loads(line)
    if not isinstance(answer, dict):
        raise ValueError("the control answer is not a JSON object")
    return answer
