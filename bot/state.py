"""The node's state directory: highest epoch seen, the held epoch, promises, pause.

Each change rewrites ``state.json`` and then ``state.json.bak`` (same content), each
with write, fsync, atomic rename and a directory fsync, so a crash leaves the old or
the new state, never half of one.

A corrupt file never crashes the bot. Loading falls back to the backup copy; if that
is corrupt too, the node starts *conservatively*: paused (no automatic action until an
operator resumes, which rewrites the files), holding nothing (no adoption, rule 7),
with the largest epoch still readable from either file (the Redis counter remains the
other floor). The problem is kept in ``load_error`` for the agent to log, and the
damaged files are kept aside (``*.corrupt``) for the operator.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from bot.boottime import boottime

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
BACKUP_FILE = "state.json.bak"
SCHEMA_VERSION = 1
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


class StateError(Exception):
    """The state directory could not be read or written."""


def current_boot_id() -> str:
    try:
        return Path(BOOT_ID_PATH).read_text(encoding="ascii").strip()
    except OSError:
        return ""


class StateDir:
    def __init__(self, path: str | Path, *, boot_id: str | None = None) -> None:
        self.path = Path(path)
        self.boot_id = current_boot_id() if boot_id is None else boot_id
        self.highest_epoch = 0
        self.held_epoch: int | None = None
        self.paused = False
        self.promise_peer: str | None = None
        self._promise_until: float | None = None
        self._promise_boot: str | None = None
        self.load_error: StateError | None = None
        # Each change bumps the generation; a write carries the generation of the snapshot
        # it holds, and an older snapshot never replaces a newer one on disk (writes from
        # the loop and from a worker thread may cross).
        self._generation = 0
        self._written_generation = 0
        self._promise_generation = 0
        self._write_lock = threading.Lock()
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.path, 0o700)
        except OSError as exc:
            raise StateError(f"state directory {self.path}: {exc.strerror or exc}") from None
        self._load()

    # ------------------------------------------------------------------ reading

    def _load(self) -> None:
        main, backup = self.path / STATE_FILE, self.path / BACKUP_FILE
        problems: list[str] = []
        for candidate in (main, backup):
            if not candidate.exists():
                continue
            try:
                self._apply(_parse(candidate.read_bytes()))
            except (OSError, ValueError) as exc:
                problems.append(f"{candidate}: {exc}")
                continue
            if problems:
                self.load_error = StateError("; ".join(problems) + f"; using {candidate}")
                self._keep_aside(main)
            return
        if problems:
            # Both copies unreadable: keep the epoch floor from whatever digits survive,
            # and take no automatic action until an operator resumes.
            self.highest_epoch = max(_salvage_epoch(p) for p in (main, backup))
            self.paused = True
            self.load_error = StateError(
                "; ".join(problems) + "; starting paused with epoch floor "
                f"{self.highest_epoch} (resume after checking the node)"
            )
            for p in (main, backup):
                self._keep_aside(p)

    def _apply(self, obj: dict[str, Any]) -> None:
        self.highest_epoch = obj["highest_epoch"]
        self.held_epoch = obj["held_epoch"]
        self.paused = obj["paused"]
        promise = obj["promise"]
        if promise is None:
            self.promise_peer = self._promise_until = self._promise_boot = None
        else:
            self.promise_peer = promise["peer"]
            self._promise_until = promise["until_boottime"]
            self._promise_boot = promise["boot_id"]

    def _keep_aside(self, path: Path) -> None:
        try:
            if path.exists():
                os.replace(path, path.with_name(path.name + ".corrupt"))
        except OSError as exc:
            log.warning("could not keep %s aside: %s", path, exc)

    # ------------------------------------------------------------------ writing

    def _snapshot(self) -> dict[str, Any]:
        promise = None
        if self._promise_until is not None:
            promise = {
                "peer": self.promise_peer,
                "until_boottime": self._promise_until,
                "boot_id": self._promise_boot,
            }
        return {
            "v": SCHEMA_VERSION,
            "highest_epoch": self.highest_epoch,
            "held_epoch": self.held_epoch,
            "paused": self.paused,
            "promise": promise,
        }

    def _stage(self) -> tuple[int, bytes]:
        """The current state as the next generation's bytes (taken on the caller's thread)."""
        self._generation += 1
        return self._generation, json.dumps(self._snapshot(), sort_keys=True).encode() + b"\n"

    def _write(self, generation: int, data: bytes) -> None:
        with self._write_lock:
            if generation <= self._written_generation:
                return  # a newer snapshot is already on disk
            try:
                for name in (STATE_FILE, BACKUP_FILE):
                    _atomic_write(self.path, name, data)
            except OSError as exc:
                raise StateError(f"writing {self.path}: {exc.strerror or exc}") from None
            self._written_generation = generation

    def _save(self) -> None:
        self._write(*self._stage())

    def record_epoch(self, epoch: int) -> None:
        """Remember the largest epoch seen (never goes down)."""
        if epoch > self.highest_epoch:
            self.highest_epoch = epoch
            self._save()

    def set_held(self, epoch: int | None) -> None:
        """The epoch this node holds as primary (rule 7 adoption); None when it holds none."""
        if epoch == self.held_epoch and (epoch is None or epoch <= self.highest_epoch):
            return
        if epoch is not None and epoch > self.highest_epoch:
            self.highest_epoch = epoch
        self.held_epoch = epoch
        self._save()

    def set_paused(self, paused: bool) -> None:
        if paused != self.paused:
            self.paused = paused
            self._save()
        elif self.load_error is not None and not paused:
            self._save()  # an explicit resume after a damaged state rewrites it

    def give_promise(self, peer: str, until_boottime: float) -> None:
        """Promise ``peer`` not to take the lease until then; durable before it returns.

        Call it BEFORE the answer is sent. A later promise never shortens an earlier one.
        """
        if self._stage_promise(peer, until_boottime):
            self._save()

    async def give_promise_off_loop(self, peer: str, until_boottime: float) -> None:
        """``give_promise`` whose fsync runs in a worker thread: the standby gives one each
        renewal interval, and the event loop must not wait on the disk for it.

        The promise holds in memory at once (this node keeps away from the lease from
        then on, the safe side) and is durable when this returns; only then may it be
        announced to the peer."""
        if self._stage_promise(peer, until_boottime):
            await asyncio.to_thread(self._write, *self._stage())

    def _stage_promise(self, peer: str, until_boottime: float) -> bool:
        """Extend the promise in memory; True when it still has to reach the disk."""
        current = self.promise_until()
        if current is None or current < until_boottime:
            self.promise_peer = peer
            self._promise_until = until_boottime
            self._promise_boot = self.boot_id
            self._promise_generation = self._generation + 1
        return self._written_generation < self._promise_generation

    def promise_until(self) -> float | None:
        """The boottime deadline of the promise given, None if none or from another boot."""
        if self._promise_until is None or self._promise_boot != self.boot_id:
            return None
        return self._promise_until

    def promise_active(self, now: float | None = None) -> bool:
        until = self.promise_until()
        return until is not None and (boottime() if now is None else now) < until


def _parse(data: bytes) -> dict[str, Any]:
    """Strictly validate one state file; ValueError with the reason otherwise."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if obj.get("v") != SCHEMA_VERSION:
        raise ValueError(f"unknown schema version {obj.get('v')!r}")
    epoch = obj.get("highest_epoch")
    if type(epoch) is not int or epoch < 0:
        raise ValueError("highest_epoch must be an integer >= 0")
    held = obj.get("held_epoch")
    if held is not None and (type(held) is not int or held < 1):
        raise ValueError("held_epoch must be null or an integer >= 1")
    if not isinstance(obj.get("paused"), bool):
        raise ValueError("paused must be true or false")
    promise = obj.get("promise")
    if promise is not None and (
        not isinstance(promise, dict)
        or not isinstance(promise.get("peer"), str)
        or not isinstance(promise.get("boot_id"), str)
        or isinstance(promise.get("until_boottime"), bool)
        or not isinstance(promise.get("until_boottime"), (int, float))
    ):
        raise ValueError("promise must hold peer, until_boottime and boot_id")
    return dict(obj)


def _salvage_epoch(path: Path) -> int:
    """The largest 'highest_epoch'/'held_epoch' number still legible in a damaged file."""
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return 0
    found = re.findall(r'"(?:highest_epoch|held_epoch)"\s*:\s*"?(\d{1,18})', text)
    return max((int(n) for n in found), default=0)


def _atomic_write(directory: Path, name: str, data: bytes) -> None:
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / name)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# ---------------------------------------------------------------------- data marks

OUTDATED_FILE = "outdated.json"
FORCE_FILE = "force-promote.json"


class DataMarks:
    """This node's own record that its DRBD data is outdated, and an operator's
    one-shot permission to promote it anyway.

    Kept in files of their own (each written atomically and fsync'd) and read afresh
    on every question, so that the agent, DRBD's handlers and the operator's CLI,
    which are separate processes, never overwrite each other's state. An unreadable
    mark counts as present: the safe reading of a damaged file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            data = (self.path / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return {"unreadable": exc.strerror or str(exc)}
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return {"unreadable": f"not JSON ({exc})"}
        return obj if isinstance(obj, dict) else {"unreadable": "not a JSON object"}

    def _write(self, name: str, obj: dict[str, Any]) -> None:
        data = json.dumps({"v": SCHEMA_VERSION, **obj}, sort_keys=True).encode() + b"\n"
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            _atomic_write(self.path, name, data)
        except OSError as exc:
            raise StateError(f"writing {self.path / name}: {exc.strerror or exc}") from None

    def _remove(self, name: str) -> bool:
        try:
            (self.path / name).unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StateError(f"removing {self.path / name}: {exc.strerror or exc}") from None
        dfd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return True

    def outdated(self) -> dict[str, Any] | None:
        """The mark (who outdated this node, when, why), or None."""
        return self._read(OUTDATED_FILE)

    def mark_outdated(self, *, by: str, resource: str, at_wall: float, reason: str) -> None:
        """Durable before it returns: call it BEFORE telling the peer it is done."""
        self._write(
            OUTDATED_FILE, {"by": by, "resource": resource, "at": at_wall, "reason": reason}
        )

    def clear_outdated(self) -> bool:
        return self._remove(OUTDATED_FILE)

    def forced(self) -> dict[str, Any] | None:
        """An operator's pending force-promote (who, when), or None."""
        return self._read(FORCE_FILE)

    def allow_force(self, *, by: str, at_wall: float, reason: str) -> None:
        self._write(FORCE_FILE, {"by": by, "at": at_wall, "reason": reason})

    def clear_force(self) -> bool:
        return self._remove(FORCE_FILE)


def describe_mark(mark: dict[str, Any]) -> str:
    if "unreadable" in mark:
        return f"the outdated mark is unreadable ({mark['unreadable']}): counted as outdated"
    return f"outdated by {mark.get('by', '?')} ({mark.get('reason', 'no reason recorded')})"
