"""The node's state directory: durable, atomic, conservative on damage."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from bot import state as state_module
from bot.state import BACKUP_FILE, STATE_FILE, StateDir, StateError


def test_creates_private_directory_and_starts_empty(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    assert stat.S_IMODE(os.stat(tmp_path / "s").st_mode) == 0o700
    assert (state.highest_epoch, state.held_epoch, state.paused) == (0, None, False)
    assert state.promise_until() is None and state.load_error is None


def test_values_survive_a_restart(tmp_path: Path) -> None:
    state = StateDir(tmp_path, boot_id="boot-1")
    state.record_epoch(7)
    state.record_epoch(5)  # never goes down
    state.set_held(9)
    state.set_paused(True)
    state.give_promise("b", 1234.5)
    again = StateDir(tmp_path, boot_id="boot-1")
    assert (again.highest_epoch, again.held_epoch, again.paused) == (9, 9, True)
    assert again.promise_until() == 1234.5 and again.promise_peer == "b"
    again.set_held(None)
    assert StateDir(tmp_path, boot_id="boot-1").held_epoch is None
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_promise_from_another_boot_is_void(tmp_path: Path) -> None:
    StateDir(tmp_path, boot_id="boot-1").give_promise("b", 100.0)
    assert StateDir(tmp_path, boot_id="boot-2").promise_until() is None


def test_a_later_promise_never_shortens_an_earlier_one(tmp_path: Path) -> None:
    state = StateDir(tmp_path, boot_id="x")
    state.give_promise("b", 100.0)
    state.give_promise("b", 50.0)
    assert state.promise_until() == 100.0
    assert state.promise_active(now=99.0) and not state.promise_active(now=100.0)
    state.give_promise("b", 150.0)
    assert StateDir(tmp_path, boot_id="x").promise_until() == 150.0


def test_promise_is_on_disk_before_give_promise_returns(tmp_path: Path) -> None:
    StateDir(tmp_path, boot_id="x").give_promise("b", 42.0)
    on_disk = json.loads((tmp_path / STATE_FILE).read_text())
    assert on_disk["promise"] == {"peer": "b", "until_boottime": 42.0, "boot_id": "x"}


def test_real_boot_id_is_used_by_default(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    assert state.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def test_corrupt_main_file_falls_back_to_backup(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.record_epoch(12)
    (tmp_path / STATE_FILE).write_bytes(b'{"v": 1, "highest_ep')
    again = StateDir(tmp_path)
    assert again.highest_epoch == 12 and not again.paused
    assert isinstance(again.load_error, StateError)
    assert "not JSON" in str(again.load_error)
    assert (tmp_path / (STATE_FILE + ".corrupt")).exists()


@pytest.mark.parametrize(
    "damage",
    [
        b"\x00\x01garbage",
        b'{"v": 2, "highest_epoch": 30, "held_epoch": null, "paused": false, "promise": null}',
        b'{"v": 1, "highest_epoch": "30", "held_epoch": null, "paused": false, "promise": null}',
        b'{"v": 1, "highest_epoch": 30, "held_epoch": 30, "paused": "no", "promise": null}',
    ],
)
def test_both_copies_corrupt_start_paused_and_keep_the_epoch_floor(
    tmp_path: Path, damage: bytes
) -> None:
    state = StateDir(tmp_path)
    state.record_epoch(30)
    state.set_held(30)
    for name in (STATE_FILE, BACKUP_FILE):
        (tmp_path / name).write_bytes(damage)
    again = StateDir(tmp_path)  # does not raise
    assert again.load_error is not None
    assert again.paused  # no automatic action until an operator resumes
    assert again.held_epoch is None  # never adopts a lease on damaged evidence
    legible = b"30" in damage
    assert again.highest_epoch == (30 if legible else 0)
    again.record_epoch(31)
    again.set_paused(False)  # the operator's resume rewrites a clean state
    clean = StateDir(tmp_path)
    assert clean.load_error is None and clean.highest_epoch == 31 and not clean.paused


def test_unwritable_directory_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError, match="state directory"):
        StateDir(blocker / "sub")


def gate_first_write(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """The state directory's first file write waits for ``release`` (5 s at most);
    ``writing`` is set when it begins. Later writes go straight through."""
    writing, release = threading.Event(), threading.Event()
    real_write = state_module._atomic_write

    def first_write_gated(directory: Path, name: str, data: bytes) -> None:
        if not writing.is_set():
            writing.set()
            assert release.wait(5)
        real_write(directory, name, data)

    monkeypatch.setattr(state_module, "_atomic_write", first_write_gated)
    return writing, release


async def test_a_promise_off_the_loop_is_durable_when_it_returns_and_the_loop_runs_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = StateDir(tmp_path, boot_id="x")
    writing, release = gate_first_write(monkeypatch)
    task = asyncio.ensure_future(state.give_promise_off_loop("b", 42.0))
    assert await asyncio.to_thread(writing.wait, 5)  # the loop ran while the disk waited
    assert not task.done()
    assert state.promise_until() == 42.0  # held in memory at once: this node keeps away
    release.set()
    await asyncio.wait_for(task, 5)
    assert StateDir(tmp_path, boot_id="x").promise_until() == 42.0


async def test_an_older_snapshot_never_replaces_a_newer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = StateDir(tmp_path, boot_id="x")
    writing, release = gate_first_write(monkeypatch)
    promise = asyncio.ensure_future(state.give_promise_off_loop("b", 42.0))
    assert await asyncio.to_thread(writing.wait, 5)
    # Meanwhile the loop takes the lease: a newer snapshot, written when the lock frees.
    epoch = asyncio.ensure_future(asyncio.to_thread(state.set_held, 7))
    release.set()
    await asyncio.wait_for(asyncio.gather(promise, epoch), 5)
    again = StateDir(tmp_path, boot_id="x")
    assert (again.held_epoch, again.promise_until()) == (7, 42.0)


async def test_a_promise_that_failed_to_persist_is_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = StateDir(tmp_path, boot_id="x")
    real_write = state_module._atomic_write

    def full_disk(directory: Path, name: str, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state_module, "_atomic_write", full_disk)
    with pytest.raises(StateError, match="No space left"):
        await state.give_promise_off_loop("b", 42.0)
    monkeypatch.setattr(state_module, "_atomic_write", real_write)
    await state.give_promise_off_loop("b", 42.0)  # the same promise: not durable yet
    assert StateDir(tmp_path, boot_id="x").promise_until() == 42.0
