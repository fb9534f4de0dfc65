"""A bot that starts announces nothing that did not happen: no "Redis answers again"
webhook when Redis was never lost (an alert channel that cries wolf gets muted); a
real loss and return are announced.

A real pair (lab cluster, real redis-server) with a JSON webhook to a receiver on
loopback; the takeover's own webhooks prove the hooks work.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness import tools
from tests.helpers import wait_for_sync


class Receiver:
    """Every webhook body posted to it, in order."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def kinds(self) -> list[str]:
        return [str(b.get("kind") or b.get("event")) for b in self.bodies]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def test_a_start_with_redis_up_sends_no_redis_back(tmp_path: Path, receiver: Receiver) -> None:
    if reason := tools.missing("redis-server"):
        pytest.skip(reason)
    from harness.cluster import Cluster

    url_file = tmp_path / "hook.url"
    url_file.write_text(receiver.url + "\n")
    hooks = {"webhooks": [{"url_file": str(url_file), "format": "json"}]}
    cluster = Cluster(tmp_path / "lab", None, extra={"notify": hooks})
    try:
        cluster.start()
        cluster.wait_primary(within=60)
        wait_for_sync(
            lambda: "failover_completed" in receiver.kinds(), 30, "the takeover's webhook"
        )
        kinds = list(receiver.kinds())
        assert "redis_back" not in kinds, f"Redis was never lost, yet: {kinds}"
        assert "redis_lost" not in kinds, kinds
        # A real loss and return are still announced, each once per bot.
        cluster.redis.kill()
        wait_for_sync(lambda: receiver.kinds().count("redis_lost") == 2, 30, "redis_lost x2")
        cluster.redis.start()
        wait_for_sync(lambda: receiver.kinds().count("redis_back") == 2, 30, "redis_back x2")
    finally:
        cluster.stop()
