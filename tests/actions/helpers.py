"""Configurations and in-process stand-ins for the takeover tests."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bot.config import Config, parse_config
from tests.helpers import node_config_text


def takeover_sections(tmp_path: Path, fence_budget: str = "500ms") -> dict[str, dict[str, Any]]:
    """Node a with every takeover part configured (fake commands), as TOML tables."""
    return {
        "node": {"rseries_host": "A", "state_dir": str(tmp_path / "state")},
        "cluster": {"lease_ttl": "3s", "renew_interval": "1s", "fence_budget": fence_budget},
        "rseries": {"port": "/dev/null"},
        "drbd": {"resources": ["r0"], "mount": [{"device": "/dev/drbd0", "path": "/srv/pbx"}]},
        "vip": {
            "address": "192.0.2.10/24",
            "interface": "eth0",
            "arp_count": 1,
            "arp_interval": "10ms",
        },
        "asterisk": {
            **{verb: ["fake-service", verb, "asterisk"] for verb in ("start", "stop", "kill")},
            "status": ["fake-service", "status", "asterisk"],
            "boot_timeout": "2s",
            "command_timeout": "5s",
        },
        "spans": {"critical": [1, 2], "grace": "1s"},
        "test_call": {"timeout": "1s"},
    }


def make_config(tmp_path: Path, *, fence_budget: str = "500ms", extra: str = "") -> Config:
    text = node_config_text(**takeover_sections(tmp_path, fence_budget))
    return parse_config(text + extra, tmp_path)


@dataclass
class Journal:
    """In-process collaborators record here, with the same clock the fakes use."""

    entries: list[tuple[float, str]] = field(default_factory=list)

    def add(self, what: str) -> None:
        self.entries.append((time.monotonic(), what))


class LinkStandIn:
    """The R-Series driver as the takeover sees it."""

    def __init__(self, journal: Journal, *, fail: bool = False, answer: str | None = None):
        self.journal = journal
        self.fail = fail
        self.answer = answer
        self.connected = True
        self.active: str | None = "B"

    async def route(self, host: str, *, may_write: Any = None) -> Any:
        if may_write is not None and not may_write():
            raise RuntimeError("refused right before writing")
        self.journal.add(f"route {host}")
        if self.fail:
            raise RuntimeError("ERR 4 LOCKED")
        self.active = self.answer or host
        return SimpleNamespace(active=self.active)

    async def status(self) -> Any:
        return SimpleNamespace(active=self.active)

    async def set_mode(self, mode: str) -> Any:
        self.journal.add(f"mode {mode}")

    async def set_watchdog(self, seconds: int | None) -> Any:
        self.journal.add(f"wdt {seconds}")

    def notifications(self) -> Any:
        raise NotImplementedError

    async def run_heartbeat(self, interval: float, enabled: Any) -> None:
        raise NotImplementedError


class AmiStandIn:
    def __init__(self, journal: Journal, *, boots: bool = True, channels: list[int] | None = None):
        self.journal = journal
        self.boots = boots
        self.channels = list(channels or [0])

    async def wait_fully_booted(self, timeout: float) -> None:  # noqa: ASYNC109
        self.journal.add("fully_booted")
        if not self.boots:
            raise ConnectionError("AMI: Shutdown (Restart: False) before FullyBooted")

    async def active_channels(self) -> int:
        count = self.channels.pop(0) if len(self.channels) > 1 else self.channels[0]
        self.journal.add(f"channels {count}")
        return count


class TestCallStandIn:
    __test__ = False

    def __init__(self, journal: Journal, outcome: str = "answered"):
        self.journal = journal
        self.outcome = outcome

    async def __call__(self) -> Any:
        self.journal.add("test_call")
        return SimpleNamespace(outcome=self.outcome, setup_seconds=0.01, reason="no answer")
