"""DRBD: read the state, promote and demote resources, mount and unmount.

State is read with ``drbdsetup status --json`` where DRBD 9 provides it, and
with ``drbdadm role|dstate|cstate RES`` otherwise (Debian's stock 8.4 module).
Promotion is refused unless the local disk is ``UpToDate`` and the node is not
marked outdated, neither on the cluster bus nor in its own state directory (the
mark the peer's fence-peer handler had it write over the peer channel). Only an
operator's ``force-promote --i-know-data-may-be-lost`` lifts that, once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.actions.errors import (
    ActionError,
    CommandFailed,
    CommandNotFound,
    DrbdError,
    DrbdModuleMissing,
    PromoteRefused,
)
from bot.actions.runner import CommandResult, Runner, run_command
from bot.config import DrbdConfig, MountConfig
from bot.health import ReadinessFacts, readiness
from bot.state import DataMarks, StateError, describe_mark

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 10.0  # drbdadm primary/secondary and state queries
MOUNT_TIMEOUT = 30.0  # a journal replay on mount can take a while
MODULE_MISSING_EXIT = 20


@dataclass(frozen=True)
class ResourceState:
    name: str
    role: str  # Primary | Secondary | Unknown
    disk: str  # UpToDate | Outdated | Inconsistent | Diskless | ...
    connection: str  # Connected | StandAlone | WFConnection | Connecting | ...
    peer_role: str  # Primary | Secondary | Unknown
    peer_disk: str

    @property
    def primary(self) -> bool:
        return self.role == "Primary"

    @property
    def up_to_date(self) -> bool:
        return self.disk == "UpToDate"


def parse_slash_pair(text: str) -> tuple[str, str]:
    """``"Primary/Secondary"`` (drbdadm 8.4 output) -> ("Primary", "Secondary")."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    local, _, peer = line.partition("/")
    return local.strip() or "Unknown", peer.strip() or "Unknown"


def parse_status_json(text: str) -> dict[str, ResourceState]:
    """Parse ``drbdsetup status --json`` (DRBD 9); raise ValueError on anything else."""
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("expected a JSON list of resources")
    result: dict[str, ResourceState] = {}
    for res in data:
        name = str(res["name"])
        disks = [str(d.get("disk-state", "Unknown")) for d in res.get("devices", [])]
        disk = _worst(disks) if disks else "Diskless"
        conns: list[dict[str, Any]] = list(res.get("connections", []))
        conn = conns[0] if conns else {}
        peer_disks = [
            str(pd.get("peer-disk-state", "DUnknown")) for pd in conn.get("peer_devices", [])
        ]
        result[name] = ResourceState(
            name=name,
            role=str(res.get("role", "Unknown")),
            disk=disk,
            connection=str(conn.get("connection-state", "StandAlone")),
            peer_role=str(conn.get("peer-role", "Unknown")),
            peer_disk=_worst(peer_disks) if peer_disks else "DUnknown",
        )
    return result


def _worst(states: list[str]) -> str:
    """A resource is only as good as its worst volume."""
    for state in states:
        if state != "UpToDate":
            return state
    return "UpToDate"


@dataclass(frozen=True)
class OutdateAnswer:
    """This node's answer to the peer's "outdate yourself" request."""

    outdated: bool  # the mark is durable here and no resource is Primary
    primary: bool  # refused: this node is Primary (DRBD's fence-peer exit 6)
    reason: str


def promote_refusal(
    state: ResourceState, outdated: bool, local_mark: str | None = None
) -> str | None:
    """Why this resource must not be promoted, or None."""
    if local_mark:
        return f"{state.name}: this node's state directory says its data is {local_mark}"
    if outdated:
        return f"{state.name}: this node is marked outdated on the cluster bus"
    if state.disk != "UpToDate":
        return f"{state.name}: local disk is {state.disk}, not UpToDate"
    if state.peer_role == "Primary" and state.connection == "Connected":
        return f"{state.name}: the peer is primary and connected"
    return None


class Drbd:
    """Promote/demote the configured resources and their file systems."""

    def __init__(
        self,
        cfg: DrbdConfig,
        *,
        runner: Runner = run_command,
        outdated: Callable[[], bool] = lambda: False,
        marks: DataMarks | None = None,
    ) -> None:
        self.cfg = cfg
        self.run = runner
        self.outdated = outdated
        self.marks = marks
        self._json: bool | None = None  # DRBD 9 status --json available (cached)
        # Promotion and the peer's outdate request never interleave: an outdate that
        # answered "done" must never be followed by a promotion that checked before it.
        self._role_lock = asyncio.Lock()

    def local_mark(self) -> str | None:
        """This node's own outdated mark, described, or None."""
        mark = self.marks.outdated() if self.marks is not None else None
        return describe_mark(mark) if mark is not None else None

    def forced(self) -> dict[str, Any] | None:
        """An operator's pending force-promote, or None (an unreadable file is none)."""
        force = self.marks.forced() if self.marks is not None else None
        return force if force is not None and "unreadable" not in force else None

    # ---------------------------------------------------------------- state

    async def _drbd(self, argv: list[str], *, limit: float, check: bool = True) -> CommandResult:
        try:
            result = await self.run(argv, timeout=limit, check=False)
        except CommandNotFound as exc:
            raise DrbdError(f"{argv[0]} is not installed: {exc}") from None
        if result.returncode == MODULE_MISSING_EXIT:
            raise DrbdModuleMissing(
                f"{' '.join(result.argv)} exited 20: the DRBD kernel module is not loaded "
                "(modprobe drbd, or install the module for this kernel)"
            )
        if check and result.returncode != 0:
            raise DrbdError(result.summary())
        return result

    async def state(self, resource: str, *, limit: float = COMMAND_TIMEOUT) -> ResourceState:
        if self._json is not False:
            result = await self._drbd(
                [self.cfg.drbdsetup, "status", "--json", resource], limit=limit, check=False
            )
            if result.returncode == 0:
                try:
                    states = parse_status_json(result.stdout)
                    self._json = True
                    if resource in states:
                        return states[resource]
                    raise DrbdError(f"{resource}: not in drbdsetup status")
                except (ValueError, KeyError, TypeError):
                    log.info("drbdsetup status --json unusable; using drbdadm role/dstate/cstate")
            if self._json is None:
                self._json = False
        role = await self._drbd([self.cfg.drbdadm, "role", resource], limit=limit)
        dstate = await self._drbd([self.cfg.drbdadm, "dstate", resource], limit=limit)
        cstate = await self._drbd([self.cfg.drbdadm, "cstate", resource], limit=limit)
        local_role, peer_role = parse_slash_pair(role.stdout)
        local_disk, peer_disk = parse_slash_pair(dstate.stdout)
        return ResourceState(
            name=resource,
            role=local_role,
            disk=local_disk,
            connection=(cstate.stdout.strip() or "Unknown").splitlines()[0],
            peer_role=peer_role,
            peer_disk=peer_disk,
        )

    async def states(self, *, limit: float = COMMAND_TIMEOUT) -> list[ResourceState]:
        return [await self.state(r, limit=limit) for r in self.cfg.resources]

    async def is_primary(self) -> bool:
        """True when any configured resource is primary here."""
        return any(s.primary for s in await self.states())

    async def readiness_facts(self, outdated: bool) -> ReadinessFacts:
        """This node's data, as the readiness rule (``bot.health.readiness``) reads it."""
        try:
            disks: tuple[tuple[str, str], ...] | None = tuple(
                (s.name, s.disk) for s in await self.states()
            )
            error = None
        except ActionError as exc:
            disks, error = None, str(exc)
        return ReadinessFacts(
            drbd_disks=disks,
            drbd_error=error,
            drbd_local_mark=self.local_mark(),
            drbd_outdated_on_bus=outdated,
            drbd_forced=self.forced() is not None,
        )

    async def readiness(self, outdated: bool) -> list[str]:
        """Reasons this node's data is not ready to take over (empty: ready)."""
        return list(readiness(await self.readiness_facts(outdated))[1])

    # ---------------------------------------------------------------- actions

    async def promote(self, *, force: bool = False) -> list[str]:
        """Make every resource primary and mount its file systems; return what changed."""
        changed: list[str] = []
        operator = self.forced() if not force else None
        if operator is not None:
            force = True
        async with self._role_lock:
            for resource in self.cfg.resources:
                state = await self.state(resource)
                if state.primary:
                    continue
                if not force:
                    reason = promote_refusal(state, self.outdated(), self.local_mark())
                    if reason:
                        raise PromoteRefused(f"refusing to promote {reason}")
                argv = [self.cfg.drbdadm, "primary", *(["--force"] if force else []), resource]
                await self._drbd(argv, limit=COMMAND_TIMEOUT)
                changed.append(f"{resource} primary" + (" (forced)" if force else ""))
        if operator is not None and self.marks is not None:
            # The permission is spent: the next promotion checks the data again.
            try:
                self.marks.clear_force()
                self.marks.clear_outdated()
                spent = "outdated mark cleared"
            except StateError as exc:
                log.error("force-promote permission not cleared: %s", exc)
                spent = f"permission NOT cleared ({exc})"
            changed.append(f"force-promote by {operator.get('by', '?')} used; {spent}")
        for mount in self.cfg.mount:
            if await self.mounted(mount):
                continue
            await self._mount(mount)
            changed.append(f"{mount.path} mounted")
        return changed

    async def demote(self, *, limit: float = COMMAND_TIMEOUT) -> list[str]:
        """Unmount, then make every resource secondary; return what changed."""
        changed: list[str] = []
        for mount in reversed(self.cfg.mount):
            if await self.mounted(mount, limit=limit):
                await self._umount(mount, limit=limit)
                changed.append(f"{mount.path} unmounted")
        for resource in self.cfg.resources:
            state = await self.state(resource, limit=limit)
            if state.role == "Secondary":
                continue
            await self._drbd([self.cfg.drbdadm, "secondary", resource], limit=limit)
            changed.append(f"{resource} secondary")
        return changed

    async def clear_mark_if_in_sync(self, in_sync: Callable[[list[ResourceState]], bool]) -> bool:
        """Clear this node's own outdated mark if ``in_sync`` holds for DRBD's state, read
        under the role lock: never across the peer's outdate request. True if cleared."""
        if self.marks is None or self.marks.outdated() is None:
            return False
        async with self._role_lock:
            if self.marks.outdated() is None or not in_sync(await self.states()):
                return False
            return self.marks.clear_outdated()

    async def outdate_self(self, peer: str, resource: str | None, at_wall: float) -> OutdateAnswer:
        """The peer's fence-peer handler asks this node to outdate its data.

        Refused while a resource is Primary here. Otherwise the mark is made durable in
        the state directory first, then ``drbdadm outdate`` runs on every resource; the
        answer is "outdated" only when the mark is on disk and nothing is Primary.
        """
        if self.marks is None:
            return OutdateAnswer(False, False, "no state directory for the mark")
        async with self._role_lock:
            try:
                states = await self.states()
            except ActionError as exc:
                states = []
                drbd_problem = f"DRBD state unreadable ({exc})"
            else:
                drbd_problem = ""
            primaries = [s.name for s in states if s.primary]
            if primaries:
                return OutdateAnswer(False, True, f"{', '.join(primaries)} Primary here")
            why = f"{peer} lost the replication link ({resource or 'all resources'})"
            try:
                self.marks.mark_outdated(
                    by=peer, resource=resource or "", at_wall=at_wall, reason=why
                )
            except StateError as exc:
                return OutdateAnswer(False, False, f"could not persist the mark: {exc}")
            problems = [drbd_problem] if drbd_problem else []
            for name in self.cfg.resources:
                result = await self._drbd(
                    [self.cfg.drbdadm, "outdate", name], limit=COMMAND_TIMEOUT, check=False
                )
                if result.returncode != 0:
                    problems.append(result.summary())
            try:
                still_primary = [s.name for s in await self.states() if s.primary]
            except ActionError as exc:
                still_primary = []
                problems.append(f"DRBD state unreadable ({exc})")
        if still_primary:
            return OutdateAnswer(False, True, f"{', '.join(still_primary)} Primary here")
        detail = "; DRBD: " + "; ".join(problems) if problems else "; DRBD disk Outdated"
        log.warning("data outdated at %s's request: %s", peer, why)
        return OutdateAnswer(True, False, "outdated: mark persisted" + detail)

    async def fence(self, limit: float, *, escalate: bool = False) -> None:
        """Unmount and demote without queries first: every command at once where possible.

        ``escalate`` (a retry after a failed fence): first end the processes that hold
        each mounted file system (``fuser -k -M -m``: only if it is a mount point, never
        the parent file system's users), then unmount it, lazily if it still refuses."""
        if escalate:
            await asyncio.gather(
                *(self._release(m, limit=limit) for m in self.cfg.mount), return_exceptions=True
            )
        umounts = [self._umount(m, limit=limit, missing_ok=True) for m in self.cfg.mount]
        results: list[object] = list(await asyncio.gather(*umounts, return_exceptions=True))
        secondaries = [
            self._drbd([self.cfg.drbdadm, "secondary", r], limit=limit) for r in self.cfg.resources
        ]
        results += await asyncio.gather(*secondaries, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, Exception):
                raise failure
        if failures:
            raise DrbdError("; ".join(str(f) for f in failures))

    async def _release(self, mount: MountConfig, *, limit: float) -> None:
        if not await self.mounted(mount, limit=limit):
            return
        argv = ["fuser", "-k", "-M", "-m", mount.path]
        ended = await self.run(argv, timeout=limit, check=False)
        result = await self.run(["umount", mount.path], timeout=limit, check=False)
        if result.returncode != 0 and ended.returncode == 0:
            # Its users are gone but it still will not unmount (a new opener): detach it.
            # Never before they are gone: fuser -m could not find them on a detached mount.
            await self.run(["umount", "-l", mount.path], timeout=limit, check=False)

    async def mounted(self, mount: MountConfig, *, limit: float = COMMAND_TIMEOUT) -> bool:
        result = await self.run(["mountpoint", "-q", mount.path], timeout=limit, check=False)
        return result.returncode == 0

    async def _mount(self, mount: MountConfig) -> None:
        argv = ["mount", "-t", mount.fstype, "-o", mount.options, mount.device, mount.path]
        try:
            await self.run(argv, timeout=MOUNT_TIMEOUT)
        except CommandFailed as exc:
            raise DrbdError(f"mount {mount.device} on {mount.path} failed: {exc}") from None

    async def _umount(self, mount: MountConfig, *, limit: float, missing_ok: bool = False) -> None:
        result = await self.run(["umount", mount.path], timeout=limit, check=False)
        if result.returncode != 0 and not (missing_ok and "not mounted" in result.stderr):
            raise DrbdError(f"umount {mount.path} failed: {result.summary()}")
