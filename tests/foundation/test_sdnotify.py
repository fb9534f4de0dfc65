"""The notify protocol against a real datagram socket, as systemd listens."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from bot.sdnotify import SdNotifier


def test_messages_reach_the_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(2)
        notifier = SdNotifier(path)
        assert notifier.ready("standby")
        assert server.recv(4096) == b"READY=1\nSTATUS=standby"
        assert notifier.watchdog()
        assert server.recv(4096) == b"WATCHDOG=1"
        notifier.close()


def test_no_socket_is_a_quiet_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SdNotifier()
    assert not notifier.enabled
    assert not notifier.watchdog()


def test_a_vanished_socket_never_raises(tmp_path: Path) -> None:
    notifier = SdNotifier(str(tmp_path / "gone"))
    assert notifier.watchdog() is False


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "1400000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert SdNotifier.watchdog_interval() == pytest.approx(0.7)
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert SdNotifier.watchdog_interval() is None
